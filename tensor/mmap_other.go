//go:build !linux

package tensor

import (
	"errors"
	"os"
)

const canMmap = false

func mmapFile(*os.File, int64) ([]byte, error) { return nil, errors.New("mmap: not on this OS") }

func munmapFile([]byte) {}
