package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// copyBuf is the buffer size of the raw copies, as large as the director's.
const copyBuf = 256 << 10

// rawCopy is the floor of the transfers: it sends the files over one
// loopback TCP connection to a receiver that hands what arrives to sink,
// and returns the bytes sent and the time from dialing until sink is done.
// Both ends copy through user-space buffers of copyBuf bytes (no sendfile or
// splice): fedplane has to see every byte it moves (to zip, hash, frame it),
// so the floor is the cost of moving bytes through a process and nothing
// more.
func rawCopy(files []string, sink func(r io.Reader) error) (int64, time.Duration, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer lis.Close()
	done := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- sink(c)
	}()
	t0 := time.Now()
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		return 0, 0, err
	}
	buf := make([]byte, copyBuf)
	var n int64
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			c.Close()
			return 0, 0, err
		}
		m, err := io.CopyBuffer(onlyWriter{c}, onlyReader{f}, buf)
		f.Close()
		n += m
		if err != nil {
			c.Close()
			return 0, 0, fmt.Errorf("raw copy: %w", err)
		}
	}
	c.Close()
	if err := <-done; err != nil {
		return 0, 0, fmt.Errorf("raw copy: %w", err)
	}
	return n, time.Since(t0), nil
}

// rawCopyToFile is the floor of uploads and downloads: the files over
// loopback TCP into one file, fsynced, then removed.
func rawCopyToFile(files []string, dst string) (int64, time.Duration, error) {
	defer os.Remove(dst)
	return rawCopy(files, func(r io.Reader) error {
		f, err := os.Create(dst)
		if err != nil {
			return err
		}
		_, err = io.CopyBuffer(onlyWriter{f}, onlyReader{r}, make([]byte, copyBuf))
		return errors.Join(err, f.Sync(), f.Close())
	})
}

// rawCopyHashed is the floor of experiment distribution: the files over
// loopback TCP to a receiver that hashes and discards them, as the
// simulated envoys do.
func rawCopyHashed(files []string) (int64, time.Duration, error) {
	return rawCopy(files, func(r io.Reader) error {
		h := sha256.New()
		_, err := io.CopyBuffer(h, onlyReader{r}, make([]byte, copyBuf))
		return err
	})
}

// onlyReader and onlyWriter hide WriterTo and ReaderFrom, so that
// io.CopyBuffer really goes through its buffer.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }
