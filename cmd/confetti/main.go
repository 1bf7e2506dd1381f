// Command confetti is the Confetti binary: `confetti dev` runs a whole
// cluster in one process on embedded etcd, `confetti proxy` and
// `confetti cache` run the server roles against real etcd clusters, and the
// client verbs (`tenant`, `kv`) talk to them over gRPC.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit code. The first
// SIGINT or SIGTERM cancels the command's context (servers stop
// gracefully); a second one kills the process.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	a := newApp(stdout, stderr)
	root := newRootCommand(a)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "Error: %s\n", a.errorMessage(err))
		return 1
	}
	return 0
}

// stopReason says why ctx, a command's context, ended: "terminated signal
// received" when a signal stopped the command.
func stopReason(ctx context.Context) string {
	if err := context.Cause(ctx); err != nil {
		return err.Error()
	}
	return "not stopped"
}
