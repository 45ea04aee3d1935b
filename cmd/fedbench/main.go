// Command fedbench measures fedplane against floors: for each figure it runs
// fedplane's path and the simplest thing that does the same work (a no-op
// gRPC handler, a raw TCP copy, a plain summing loop) in the same run, and
// prints one table of the ratios next to their goals. Machines are noisy;
// ratios taken minutes apart are not. `make bench` builds the binaries and
// runs it; BENCHMARKS.md holds a full run and what each figure means.
//
//	go run ./cmd/fedbench [-quick] [-only heartbeat,upload,...] [-profile DIR]
//
// Every listener and connection is on 127.0.0.1; scratch files go under
// -tmp and are removed at the end.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// run parses args, runs the selected figures and prints the table. It
// returns 0, 1 when a figure failed (or missed its goal under -strict), or
// 2 on a usage error.
func run(ctx context.Context, args []string) int {
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		return 2
	}
	if cfg.serveNoop != "" {
		if err := serveNoop(ctx, cfg.serveNoop); err != nil {
			fmt.Fprintln(os.Stderr, "Error:", err)
			return 1
		}
		return 0
	}
	b, err := newBench(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		return 1
	}
	defer b.close()
	return b.run(ctx, os.Stdout)
}
