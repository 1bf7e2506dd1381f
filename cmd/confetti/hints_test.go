package main

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// shellWords splits a command line as a POSIX shell would split a simple
// command, with single and double quotes. A character that would make the
// shell do something else than run one command (a pipe, a redirection, a
// substitution) is an error: a hint must run as printed.
func shellWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case strings.ContainsRune("|&;<>()$`*?[\\", r):
			return nil, fmt.Errorf("the shell would interpret %q in %q", r, line)
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unbalanced quote in %q", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// placeholder is a word a hint asks the reader to replace: TENANT, ITEM,
// FILE, URL, TTL, N.
var placeholder = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// checkCommandLine reports why line, a command starting with "confetti",
// would not run with the real command tree: an unknown command, an unknown
// flag or a bad flag value, missing required flags, or arguments the
// command refuses. Placeholders are replaced by a value first.
func checkCommandLine(line string) error {
	words, err := shellWords(line)
	if err != nil {
		return err
	}
	if len(words) == 0 || words[0] != "confetti" {
		return fmt.Errorf("%q does not start with confetti", line)
	}
	args := words[1:]
	for i, w := range args {
		if placeholder.MatchString(w) {
			args[i] = "1"
		}
	}
	root := newRootCommand(newApp(io.Discard, io.Discard))
	root.InitDefaultHelpCmd()
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	if !cmd.Runnable() {
		return fmt.Errorf("%s does not run", cmd.CommandPath())
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		return fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	if err := cmd.ValidateRequiredFlags(); err != nil {
		return fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	return cmd.ValidateFlagGroups()
}

var (
	backquotedHint = regexp.MustCompile("`(confetti[^`]*)`")
	quotedHint     = regexp.MustCompile(`'(confetti [^']*)'`)
	formatVerb     = regexp.MustCompile(`%[-+# 0-9.\[\]]*[a-zA-Z]`)
)

// hintsIn returns the commands an error message names: in backquotes,
// the convention of the servers' messages, or in single quotes.
func hintsIn(msg string) []string {
	var hints []string
	for _, re := range []*regexp.Regexp{backquotedHint, quotedHint} {
		for _, m := range re.FindAllStringSubmatch(msg, -1) {
			hints = append(hints, m[1])
		}
	}
	return hints
}

// sourceHint is a command named in a string literal of the source, with
// its format verbs replaced by sample values.
type sourceHint struct {
	pos  string
	hint string
}

// sourceHints finds every command that a string literal of the non-test
// Go files under dirs names in backquotes, and, in the arguments of
// error constructors (Errorf, New, Error), in single quotes.
func sourceHints(t *testing.T, dirs ...string) []sourceHint {
	t.Helper()
	var hints []sourceHint
	fset := token.NewFileSet()
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			add := func(lit *ast.BasicLit, re *regexp.Regexp) {
				if lit.Kind != token.STRING || strings.HasPrefix(lit.Value, "`") {
					return
				}
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					return
				}
				for _, m := range re.FindAllStringSubmatch(s, -1) {
					h := formatVerb.ReplaceAllStringFunc(m[1], func(v string) string {
						if strings.HasSuffix(v, "d") {
							return "1"
						}
						return "acme"
					})
					hints = append(hints, sourceHint{pos: fset.Position(lit.Pos()).String(), hint: h})
				}
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.BasicLit:
					add(n, backquotedHint)
				case *ast.CallExpr:
					if sel, ok := n.Fun.(*ast.SelectorExpr); ok && (sel.Sel.Name == "Errorf" || sel.Sel.Name == "New" || sel.Sel.Name == "Error") {
						for _, arg := range n.Args {
							if lit, ok := arg.(*ast.BasicLit); ok {
								add(lit, quotedHint)
							}
						}
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return hints
}

func TestCheckCommandLineRefusesHintsThatDoNotRun(t *testing.T) {
	for _, tt := range []struct {
		line string
		ok   bool
	}{
		{line: "confetti release get --tenant acme gateway", ok: true},
		{line: "confetti lease grant --tenant acme TTL", ok: true},
		{line: "confetti release plan --tenant acme routes --version N --steps 1,10,50,100", ok: true},
		{line: "confetti item publish --tenant acme routes --file FILE", ok: true},
		{line: "confetti tenant key list", ok: true},
		{line: "confetti release get gateway"},
		{line: "confetti item history routes"},
		{line: "confetti release plan --tenant acme routes"},
		{line: "confetti tenant key create TENANT --role reader|writer|admin"},
		{line: "confetti shard add"},
		{line: "confetti tenant get"},
		{line: "confetti bogus"},
		{line: "confetti kv get --tenant acme k --no-such-flag"},
		{line: "confetti item show --tenant acme routes --version two"},
	} {
		err := checkCommandLine(tt.line)
		if (err == nil) != tt.ok {
			t.Errorf("checkCommandLine(%q) = %v, want ok=%v", tt.line, err, tt.ok)
		}
	}
}

// TestErrorHintsInTheSourceRun checks every command that an error message
// of the servers, the shared packages, the SDK or the CLI names.
func TestErrorHintsInTheSourceRun(t *testing.T) {
	hints := sourceHints(t, "../../shardproxy", "../../internal", "../../cache", "../../gateway", ".")
	if len(hints) < 10 {
		t.Fatalf("found only %d hints in the source: %v", len(hints), hints)
	}
	for _, h := range hints {
		t.Logf("%s: %s", h.pos, h.hint)
		if err := checkCommandLine(h.hint); err != nil {
			t.Errorf("%s: hint `%s` does not run: %v", h.pos, h.hint, err)
		}
	}
}

// TestUnknownSubcommandsFail runs the binary's main: a word that names no
// command of a group fails with an error and exit status 1, for every
// group; a group alone prints its help.
func TestUnknownSubcommandsFail(t *testing.T) {
	isolateClientEnv(t)
	var groups [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		if c.HasAvailableSubCommands() {
			groups = append(groups, path)
		}
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				walk(sub, append(append([]string(nil), path...), sub.Name()))
			}
		}
	}
	walk(newRootCommand(newApp(io.Discard, io.Discard)), nil)
	if len(groups) < 5 {
		t.Fatalf("found only the groups %v", groups)
	}
	lines := [][]string{{"tenant", "get"}, {"tenant", "bogus"}, {"bogus"}}
	for _, g := range groups {
		lines = append(lines, append(append([]string(nil), g...), "bogus"))
	}
	for _, args := range lines {
		var out, errOut bytes.Buffer
		code := run(args, &out, &errOut)
		if code == 0 || !strings.Contains(errOut.String(), "Error: unknown command \""+args[len(args)-1]+"\"") {
			t.Errorf("confetti %s: exit %d, stderr %q; want exit 1 and an unknown command error", strings.Join(args, " "), code, errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"tenant"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "Available Commands:") {
		t.Errorf("confetti tenant: exit %d, stdout %q; want its help", code, out.String())
	}
}

// isolateClientEnv keeps the binary's main from reading this machine's
// client config file and CONFETTI_* variables.
func isolateClientEnv(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	for _, v := range []string{"API_KEY", "ENDPOINTS", "CACHE_ENDPOINTS", "CLIENT_CONFIG", "WRITE_OUT"} {
		t.Setenv("CONFETTI_"+v, "")
	}
}

// TestProvokedErrorHintsRun provokes, through the binary's main against a
// proxy that requires API keys, the errors a user meets, and runs every
// command each message names through the command tree: each must run as
// printed, with the tenant and every required flag.
func TestProvokedErrorHintsRun(t *testing.T) {
	isolateClientEnv(t)
	tp := startProxy(t, true)
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	confetti := func(args ...string) (int, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := run(append([]string{"--endpoints", tp.grpcAddr, "--api-key", tp.operatorKey}, args...), &out, &errOut)
		return code, errOut.String()
	}
	for _, args := range [][]string{
		{"tenant", "create", "acme"},
		{"item", "publish", "--tenant", "acme", "routes", "--file", file("v1", `{"v":1}`)},
		{"item", "publish", "--tenant", "acme", "routes", "--file", file("v2", `{"v":2}`)},
	} {
		if code, errOut := confetti(args...); code != 0 {
			t.Fatalf("confetti %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
	}
	tests := []struct {
		name string
		args []string
		// want is a part of the message besides its hints.
		want string
	}{
		{name: "unknown tenant", args: []string{"kv", "get", "--tenant", "nope", "/k"}, want: "tenant not found"},
		{name: "no API key", args: []string{"kv", "get", "--tenant", "acme", "/k", "--api-key", ""}, want: "pass one with --api-key KEY, the CONFETTI_API_KEY variable or api-key in the client config file"},
		{name: "unknown API key", args: []string{"kv", "get", "--tenant", "acme", "/k", "--api-key", "cft_aaaaaaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}, want: "invalid API key"},
		{name: "release edited concurrently", args: []string{"release", "set-stable", "--tenant", "acme", "routes", "2", "--expect-mod-revision", "1"}, want: "read it again"},
		{name: "unknown item", args: []string{"item", "history", "--tenant", "acme", "nope"}, want: "has no item"},
		{name: "unknown version", args: []string{"item", "show", "--tenant", "acme", "routes", "--version", "9"}, want: "has no version 9"},
		{name: "resume without a plan", args: []string{"release", "resume", "--tenant", "acme", "routes"}, want: "has no plan"},
		{name: "a second plan", args: []string{"release", "plan", "--tenant", "acme", "routes", "--version", "2", "--steps", "50,100"}, want: "already has a running plan"},
		{name: "the plan's gray", args: []string{"release", "gray", "--tenant", "acme", "routes", "--version", "2", "--percent", "10", "--id", "v2"}, want: "driven by the running plan"},
		{name: "unknown lease", args: []string{"lease", "revoke", "--tenant", "acme", "12345"}, want: "expired, was revoked or never existed"},
		{name: "unknown key id", args: []string{"tenant", "key", "revoke", "nosuchkey"}, want: "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "a second plan" {
				if code, errOut := confetti(tt.args...); code != 0 {
					t.Fatalf("the first plan: exit %d: %s", code, errOut)
				}
			}
			code, errOut := confetti(tt.args...)
			if code == 0 {
				t.Fatalf("confetti %s succeeded, want an error", strings.Join(tt.args, " "))
			}
			if !strings.Contains(errOut, tt.want) {
				t.Errorf("message %q lacks %q", errOut, tt.want)
			}
			hints := hintsIn(errOut)
			if len(hints) == 0 {
				t.Fatalf("message %q names no command to run", errOut)
			}
			for _, h := range hints {
				if err := checkCommandLine(h); err != nil {
					t.Errorf("hint `%s` of %q does not run: %v", h, errOut, err)
				}
			}
		})
	}
}

// TestKeysThatAreNotUTF8AreRefusedWithWhy gives the CLI a key, and a
// tenant name, that are not UTF-8: the message says that keys are UTF-8
// strings instead of gRPC's marshaling error.
func TestKeysThatAreNotUTF8AreRefusedWithWhy(t *testing.T) {
	isolateClientEnv(t)
	tp := startProxy(t, false)
	for _, args := range [][]string{
		{"kv", "put", "--tenant", "acme", "bad\xffkey", "v"},
		{"kv", "get", "--tenant", "acme", "\xff", "--prefix"},
		{"kv", "del", "--tenant", "acme", "\xff"},
		{"kv", "watch", "--tenant", "acme", "\xff", "--cache-endpoints", tp.grpcAddr},
		{"tenant", "create", "\xff"},
	} {
		var out, errOut bytes.Buffer
		code := run(append([]string{"--endpoints", tp.grpcAddr}, args...), &out, &errOut)
		if code == 0 || !strings.Contains(errOut.String(), "not valid UTF-8") || !strings.Contains(errOut.String(), "are UTF-8 strings") {
			t.Errorf("confetti %q: exit %d, stderr %q; want an error saying keys are UTF-8", args, code, errOut.String())
		}
	}
}
