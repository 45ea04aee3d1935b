package envoy

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestKillOrphans plays an envoy restarted after a kill -9: the training
// group it recorded is killed, but only if it still runs in the recorded
// folder (a reused pid is left alone).
func TestKillOrphans(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	tests := []struct {
		name     string
		recorded func(dir string) string // the folder written in the record
		killed   bool
	}{
		{"same folder", func(dir string) string { return dir }, true},
		{"another folder (reused pid)", func(string) string { return "/elsewhere" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command("sleep", "100")
			cmd.Dir = dir
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-done })
			record := filepath.Join(t.TempDir(), pgidFile)
			os.WriteFile(record, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"+tt.recorded(dir)+"\n"), 0o600)

			if _, killed := killOrphans(record); killed != tt.killed {
				t.Fatalf("killed: got %v, want %v", killed, tt.killed)
			}
			select {
			case <-done:
				if !tt.killed {
					t.Fatal("a process outside the recorded folder was killed")
				}
			case <-time.After(5 * time.Second):
				if tt.killed {
					t.Fatal("the recorded group still runs")
				}
			}
			if _, err := os.Stat(record); !os.IsNotExist(err) {
				t.Fatalf("record not removed: %v", err)
			}
		})
	}
}
