package main

import (
	"os"
	"testing"
)

// mainEnv, set to 1 in the environment of this test binary, makes it run
// the command line it was started with, as the confetti binary would,
// instead of the tests: tests that need the binary as a process (signals,
// exit status) start themselves that way.
const mainEnv = "CONFETTI_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
