package adminproto

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// startServer runs a tiny admin server on a loopback port, calling handle
// for each connection, and returns its address. handle must return once stop
// is closed, which happens when the test ends.
func startServer(tb testing.TB, handle func(conn net.Conn, stop <-chan struct{})) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				handle(conn, stop)
			}()
		}
	}()
	tb.Cleanup(func() {
		close(stop)
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func reply(status, info string) *Message {
	return &Message{
		Time: "t",
		Data: []Item{{Type: TypeString, Data: info}},
		Meta: map[string]any{"status": status, "info": info},
	}
}

// readRequest reads a text request from the connection and returns its
// command line.
func readRequest(tb testing.TB, br *bufio.Reader) string {
	tb.Helper()
	if kind, err := PeekKind(br); err != nil || kind != KindText {
		tb.Errorf("server: got kind %v (%v), want %v", kind, err, KindText)
		return ""
	}
	req, err := ReadMessage(br, 0)
	if err != nil {
		tb.Errorf("server: read request: %v", err)
		return ""
	}
	cmd, err := req.Command()
	if err != nil {
		tb.Errorf("server: %v", err)
	}
	return cmd
}

// testBody returns n reproducible pseudo-random bytes.
func testBody(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(b)
	return b
}

func TestClientDo(t *testing.T) {
	addr := startServer(t, func(conn net.Conn, _ <-chan struct{}) {
		br := bufio.NewReader(conn)
		cmd := readRequest(t, br)
		status := StatusOK
		if cmd != "check_status" {
			status = StatusSyntaxError
		}
		if err := WriteMessage(conn, reply(status, "got "+cmd)); err != nil {
			t.Errorf("server: %v", err)
		}
	})
	c := &Client{Addr: addr}
	tests := []struct {
		cmd        string
		wantStatus string
		wantInfo   string
	}{
		{"check_status", StatusOK, "got check_status"},
		{"bogus", StatusSyntaxError, "got bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			got, err := c.Do(context.Background(), NewRequest(tt.cmd))
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if got.Status() != tt.wantStatus || got.Info() != tt.wantInfo {
				t.Errorf("got %q %q, want %q %q", got.Status(), got.Info(), tt.wantStatus, tt.wantInfo)
			}
		})
	}
}

func TestClientUpload(t *testing.T) {
	body := testBody(3<<20 + 17)
	wantSum := sha256.Sum256(body)
	addr := startServer(t, func(conn net.Conn, _ <-chan struct{}) {
		br := bufio.NewReader(conn)
		if kind, err := PeekKind(br); err != nil || kind != KindBinary {
			t.Errorf("server: got kind %v (%v), want %v", kind, err, KindBinary)
			return
		}
		bin, err := ReadBinary(br, 1<<30)
		if err != nil {
			t.Errorf("server: ReadBinary: %v", err)
			return
		}
		req, err := DecodeMessage(bin.Meta)
		if err != nil {
			t.Errorf("server: %v", err)
			return
		}
		if cmd, _ := req.Command(); cmd != "submit_job" {
			t.Errorf("server: got command %q, want %q", cmd, "submit_job")
		}
		h := sha256.New()
		if _, err := bin.CopyBody(h); err != nil {
			WriteMessage(conn, reply(StatusError, err.Error()))
			return
		}
		rep := reply(StatusOK, "submitted")
		if [32]byte(h.Sum(nil)) != wantSum {
			rep = reply(StatusError, "body differs")
		}
		rep.Meta["job_id"] = "0123abcd"
		WriteMessage(conn, rep)
	})
	c := &Client{Addr: addr}
	got, err := c.Upload(context.Background(), NewRequest("submit_job"), uint64(len(body)), bytes.NewReader(body))
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	if got.Status() != StatusOK || got.Meta["job_id"] != "0123abcd" {
		t.Errorf("got %v %v, want %v %v", got.Status(), got.Meta, StatusOK, "job_id 0123abcd")
	}
}

// A director that refuses an upload from its header, replies and hangs up,
// gets its reply through even though the client is still sending.
func TestClientUploadEarlyReply(t *testing.T) {
	addr := startServer(t, func(conn net.Conn, _ <-chan struct{}) {
		br := bufio.NewReader(conn)
		if _, err := ReadBinary(br, 1<<20); !errors.Is(err, ErrTooLarge) {
			t.Errorf("server: got %v, want an error wrapping %v", err, ErrTooLarge)
		}
		WriteMessage(conn, reply(StatusInvalidJobDef, "job archive too large"))
	})
	c := &Client{Addr: addr, Timeout: 5 * time.Second}
	const size = 256 << 20
	got, err := c.Upload(context.Background(), NewRequest("submit_job"), size, io.LimitReader(zeros{}, size))
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	if got.Status() != StatusInvalidJobDef {
		t.Errorf("got status %q, want %q", got.Status(), StatusInvalidJobDef)
	}
}

// An upload to a director that stops reading fails after the idle timeout.
func TestClientUploadStalled(t *testing.T) {
	addr := startServer(t, func(conn net.Conn, stop <-chan struct{}) {
		if _, err := ReadBinary(bufio.NewReader(conn), 1<<30); err != nil {
			t.Errorf("server: ReadBinary: %v", err)
		}
		<-stop
	})
	c := &Client{Addr: addr, Timeout: 200 * time.Millisecond}
	const size = 1 << 30
	_, err := c.Upload(context.Background(), NewRequest("submit_job"), size, io.LimitReader(zeros{}, size))
	want := fmt.Sprintf("send upload: director admin port %s stalled, nothing moved for 200ms: i/o timeout", addr)
	if fmt.Sprint(err) != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// A body shorter than declared fails the upload at once: the director is
// still waiting for the rest, so no reply will come.
func TestClientUploadShortBody(t *testing.T) {
	addr := startServer(t, func(conn net.Conn, stop <-chan struct{}) {
		bin, err := ReadBinary(bufio.NewReader(conn), 1<<20)
		if err == nil {
			_, err = bin.CopyBody(io.Discard)
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("server: got %v, want an error wrapping %v", err, io.ErrUnexpectedEOF)
		}
	})
	c := &Client{Addr: addr, Timeout: 5 * time.Second}
	start := time.Now()
	_, err := c.Upload(context.Background(), NewRequest("submit_job"), 100, strings.NewReader("short"))
	if got, want := fmt.Sprint(err), "send upload: body ended after 5 of 100 bytes"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v, want an immediate failure", d)
	}
}

func TestClientDownload(t *testing.T) {
	body := testBody(2<<20 + 5)
	envelope, err := EncodeMessage(reply(StatusOK, "results"))
	if err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, func(conn net.Conn, _ <-chan struct{}) {
		br := bufio.NewReader(conn)
		cmd := readRequest(t, br)
		bw := bufio.NewWriter(conn)
		defer bw.Flush()
		switch cmd {
		case "download_job envelope", "download_job toolarge":
			WriteBinary(bw, envelope, uint64(len(body)), bytes.NewReader(body))
		case "download_job object":
			WriteBinary(bw, []byte(`{"size": 5, "name": "x.zip"}`), 5, bytes.NewReader(body[:5]))
		case "download_job nometa":
			WriteBinary(bw, nil, 5, bytes.NewReader(body[:5]))
		case "download_job corrupt":
			var buf bytes.Buffer
			WriteBinary(&buf, nil, 5, bytes.NewReader(body[:5]))
			frame := buf.Bytes()
			frame[HeaderSize] ^= 0xFF
			bw.Write(frame)
		case "download_job badmeta":
			WriteBinary(bw, []byte("not json"), 5, bytes.NewReader(body[:5]))
		default:
			WriteMessage(bw, reply(StatusInvalidJobID, "no such job"))
		}
	})
	c := &Client{Addr: addr}
	tests := []struct {
		name       string
		maxBody    uint64
		wantStatus string
		wantInfo   string
		wantMeta   string
		wantBody   []byte
		wantErr    string
		wantIs     error
	}{
		{name: "envelope", wantStatus: StatusOK, wantInfo: "results", wantBody: body},
		{name: "object", wantMeta: "map[name:x.zip size:5]", wantBody: body[:5]},
		{name: "nometa", wantMeta: "map[]", wantBody: body[:5]},
		{name: "missing", wantStatus: StatusInvalidJobID, wantInfo: "no such job"},
		{name: "corrupt", wantIs: ErrChecksum},
		{name: "badmeta", wantErr: "read reply: reply meta is not a JSON object"},
		{
			name:    "toolarge",
			maxBody: 1 << 20,
			wantErr: fmt.Sprintf("read reply: body of %d bytes is too large (limit %d)", len(body), 1<<20),
			wantIs:  ErrTooLarge,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			maxBody := tt.maxBody
			if maxBody == 0 {
				maxBody = 1 << 30
			}
			var out bytes.Buffer
			got, err := c.Download(context.Background(), NewRequest("download_job "+tt.name), maxBody, &out)
			if tt.wantErr != "" || tt.wantIs != nil {
				if err == nil {
					t.Fatalf("got no error, want %q", tt.wantErr)
				}
				if tt.wantErr != "" && err.Error() != tt.wantErr {
					t.Errorf("got %q, want %q", err, tt.wantErr)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("got %v, want an error wrapping %v", err, tt.wantIs)
				}
				return
			}
			if err != nil {
				t.Fatalf("Download: %v", err)
			}
			if got.Status() != tt.wantStatus || got.Info() != tt.wantInfo {
				t.Errorf("got %q %q, want %q %q", got.Status(), got.Info(), tt.wantStatus, tt.wantInfo)
			}
			if tt.wantMeta != "" {
				if m := fmt.Sprint(got.Meta); m != tt.wantMeta {
					t.Errorf("meta: got %s, want %s", m, tt.wantMeta)
				}
			}
			if !bytes.Equal(out.Bytes(), tt.wantBody) {
				t.Errorf("body: got %d bytes, want %d", out.Len(), len(tt.wantBody))
			}
		})
	}
}

// The idle timeout cuts off a director that has stopped sending, but not one
// that sends slowly: it follows progress rather than bounding the exchange.
func TestClientIdleTimeout(t *testing.T) {
	slowReply, err := EncodeMessage(reply(StatusOK, "slow but steady"))
	if err != nil {
		t.Fatal(err)
	}
	slowReply = append(slowReply, ETX, EOT)
	const slowTail = 20 // bytes sent one every 50ms: about a second
	addr := startServer(t, func(conn net.Conn, stop <-chan struct{}) {
		cmd := readRequest(t, bufio.NewReader(conn))
		switch cmd {
		case "stall":
			<-stop
		case "slow":
			head := len(slowReply) - slowTail
			conn.Write(slowReply[:head])
			for i := head; i < len(slowReply); i++ {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				conn.Write(slowReply[i : i+1])
			}
		}
	})
	c := &Client{Addr: addr, Timeout: 200 * time.Millisecond}

	t.Run("stalled", func(t *testing.T) {
		start := time.Now()
		_, err := c.Do(context.Background(), NewRequest("stall"))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %v, want an error wrapping %v", err, os.ErrDeadlineExceeded)
		}
		want := fmt.Sprintf("read reply: director admin port %s stalled, nothing moved for 200ms: i/o timeout", addr)
		if err.Error() != want {
			t.Errorf("got %q, want %q", err, want)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v, want about 200ms", d)
		}
	})
	t.Run("slow but moving", func(t *testing.T) {
		start := time.Now()
		got, err := c.Do(context.Background(), NewRequest("slow"))
		if err != nil {
			t.Fatalf("Do: %v", err)
		}
		if got.Info() != "slow but steady" {
			t.Errorf("got %q, want %q", got.Info(), "slow but steady")
		}
		if d := time.Since(start); d < slowTail*50*time.Millisecond*9/10 {
			t.Errorf("took %v, want about a second: the server was not slow", d)
		}
	})
}

func TestClientContextCanceled(t *testing.T) {
	addr := startServer(t, func(conn net.Conn, stop <-chan struct{}) {
		readRequest(t, bufio.NewReader(conn))
		<-stop
	})
	c := &Client{Addr: addr, Timeout: time.Minute}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Do(ctx, NewRequest("check_status"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want an error wrapping %v", err, context.DeadlineExceeded)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v, want about 100ms", d)
	}
}

func TestClientConnectError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := &Client{Addr: addr}
	_, err = c.Do(context.Background(), NewRequest("check_status"))
	if got, want := fmt.Sprint(err), "connect to director admin port "+addr+": connection refused"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// A director that hangs up without a word is reported as such.
func TestClientNoReply(t *testing.T) {
	addr := startServer(t, func(conn net.Conn, _ <-chan struct{}) {
		readRequest(t, bufio.NewReader(conn))
	})
	c := &Client{Addr: addr}
	_, err := c.Do(context.Background(), NewRequest("check_status"))
	if got, want := fmt.Sprint(err), "read reply: director closed the connection without replying: unexpected EOF"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
