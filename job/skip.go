package job

import "io"

// A SkipWriter drops the first bytes written to it and writes the rest to
// an underlying writer: the tail of a stream that is made again from its
// start, as a resumed transfer of a zip is, or a hash of a whole file that
// sees bytes already on disk without writing them twice.
type SkipWriter struct {
	w    io.Writer
	skip int64
}

// NewSkipWriter returns a SkipWriter that drops the first n bytes.
func NewSkipWriter(w io.Writer, n int64) *SkipWriter {
	return &SkipWriter{w: w, skip: n}
}

// Write writes what of p lies past the bytes to skip. It reports the
// dropped bytes as written.
func (s *SkipWriter) Write(p []byte) (int, error) {
	k := int(min(s.skip, int64(len(p))))
	s.skip -= int64(k)
	if k == len(p) {
		return k, nil
	}
	n, err := s.w.Write(p[k:])
	return k + n, err
}
