package main

import (
	"strings"
	"testing"
)

func TestParseGoMem(t *testing.T) {
	tests := []struct {
		name    string
		page    string
		want    memSample
		wantErr bool
	}{
		{
			name: "all three, among others",
			page: "# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 30021\n" +
				"go_memstats_heap_inuse_bytes 1.61e+08\ngo_memstats_heap_alloc_bytes 1.0e+08\n" +
				"go_memstats_stack_inuse_bytes 106135552\n",
			want: memSample{heapInuse: 161_000_000, stackInuse: 106135552, goroutines: 30021},
		},
		{name: "one missing", page: "go_goroutines 3\ngo_memstats_heap_inuse_bytes 1\n", wantErr: true},
		{name: "not a number", page: "go_goroutines x\ngo_memstats_heap_inuse_bytes 1\ngo_memstats_stack_inuse_bytes 1\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseGoMem(strings.NewReader(tt.page))
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
