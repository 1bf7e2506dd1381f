package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runCLIIn runs one command line in process, as runCLI does, reading
// standard input from stdin.
func runCLIIn(t *testing.T, stdin io.Reader, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	a := newApp(&out, &errOut)
	a.lookupEnv = func(string) (string, bool) { return "", false }
	root := newRootCommand(a)
	root.SetArgs(append(args, "--client-config", filepath.Join(t.TempDir(), "none.yaml")))
	root.SetIn(stdin)
	root.SetOut(&out)
	root.SetErr(&errOut)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// TestKVPutTakesValuesFromStandardInputAndFiles writes values larger than
// a command line can hold (Linux caps one argument at 128 KiB), up to the
// proxy's 1 MiB limit, through - and --file, and reads them back whole; a
// value over the limit gets the proxy's error and writes nothing.
func TestKVPutTakesValuesFromStandardInputAndFiles(t *testing.T) {
	tp := startProxy(t, false)
	put := func(stdin io.Reader, args ...string) (string, error) {
		t.Helper()
		out, _, err := runCLIIn(t, stdin, append([]string{"kv", "put", "--tenant", "acme", "--endpoints", tp.grpcAddr}, args...)...)
		return out, err
	}
	get := func(key string) string {
		t.Helper()
		out, errOut, err := runCLIIn(t, nil, "kv", "get", "--tenant", "acme", key, "--endpoints", tp.grpcAddr)
		if err != nil {
			t.Fatalf("kv get %s: %v (stderr %q)", key, err, errOut)
		}
		return out
	}
	if _, _, err := runCLI(t, "tenant", "create", "acme", "--endpoints", tp.grpcAddr); err != nil {
		t.Fatal(err)
	}
	const limit = 1 << 20
	value := func(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n) }

	stdinValue := value(limit, 'a')
	if out, err := put(bytes.NewReader(stdinValue), "/stdin", "-"); err != nil || !strings.HasPrefix(out, "OK rev=") {
		t.Fatalf("put of %d bytes from standard input: %q, %v", len(stdinValue), out, err)
	}
	if got := get("/stdin"); got != "/stdin "+string(stdinValue)+"\n" {
		t.Errorf("/stdin holds %d bytes, want the %d bytes of standard input", len(got)-len("/stdin \n"), len(stdinValue))
	}

	fileValue := value(limit-1, 'b')
	file := filepath.Join(t.TempDir(), "value")
	if err := os.WriteFile(file, fileValue, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := put(nil, "/file", "--file", file); err != nil || !strings.HasPrefix(out, "OK rev=") {
		t.Fatalf("put of %d bytes from --file: %q, %v", len(fileValue), out, err)
	}
	if got := get("/file"); got != "/file "+string(fileValue)+"\n" {
		t.Errorf("/file holds %d bytes, want the %d bytes of the file", len(got)-len("/file \n"), len(fileValue))
	}
	if out, err := put(strings.NewReader("piped"), "/piped", "--file", "-"); err != nil || !strings.HasPrefix(out, "OK rev=") {
		t.Fatalf("put --file -: %q, %v", out, err)
	}
	if got := get("/piped"); got != "/piped piped\n" {
		t.Errorf("/piped = %q, want the piped value", got)
	}

	_, err := put(bytes.NewReader(value(limit+1, 'c')), "/over", "-")
	if err == nil || !strings.Contains(errorMessage(err), "value is 1048577 bytes, the limit is 1048576") {
		t.Fatalf("put of 1 MiB + 1 from standard input: err = %v, want the proxy's limit", err)
	}
	if got := get("/over"); got != "" {
		t.Errorf("a refused put wrote %q", got)
	}

	for _, args := range [][]string{{"/k"}, {"/k", "v", "--file", file}, {"/k", "v", "w"}} {
		if _, err := put(nil, args...); err == nil {
			t.Errorf("kv put %v succeeded, want an error about its arguments", args)
		}
	}
}
