//go:build linux

package tensor

import (
	"os"
	"syscall"
)

const canMmap = true

// mmapFile maps the first size bytes of f read-only. The mapping is
// shared, so that it reads the page cache without a private copy, and
// marked sequential: the aggregators walk it from start to end.
func mmapFile(f *os.File, size int64) ([]byte, error) {
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	_ = syscall.Madvise(data, syscall.MADV_SEQUENTIAL) // advice only
	return data, nil
}

func munmapFile(data []byte) { _ = syscall.Munmap(data) }
