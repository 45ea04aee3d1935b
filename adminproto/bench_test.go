package adminproto

import (
	"bytes"
	"io"
	"testing"
)

// readerOnly hides a WriteTo (bytes.Reader's), so that io.Copy goes through
// a buffer as it would from a file or a connection.
type readerOnly struct{ io.Reader }

// BenchmarkBody compares streaming a body through the binary exchange (CRC
// and all) with a plain io.Copy of the same bytes, between in-memory ends.
func BenchmarkBody(b *testing.B) {
	const size = 16 << 20
	body := testBody(size)
	meta := []byte(`{"time":"t","data":[{"type":"command","data":"submit_job"}],"meta":{}}`)
	frame := mustEncodeBinary(b, meta, body)
	sink := writerOnly{io.Discard}

	b.Run("adminproto/write", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			if err := WriteBinary(sink, meta, size, readerOnly{bytes.NewReader(body)}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("adminproto/read", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			bin, err := ReadBinary(bytes.NewReader(frame), size)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := bin.CopyBody(sink); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("iocopy", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := io.Copy(sink, readerOnly{bytes.NewReader(body)}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
