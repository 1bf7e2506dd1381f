package e2e

import (
	"os"
	"strings"
	"testing"
)

func TestParseReadmeBlocks(t *testing.T) {
	md := strings.Join([]string{
		"Try:",
		"",
		"```sh",
		"export PATH=$PWD/bin:$PATH",
		"",
		"# a comment for the reader",
		"confetti tenant create acme   # placed by hashing",
		`confetti kv put --tenant acme /routes/1 '{"uri":"/#x"}'`,
		"confetti kv get --tenant acme \\",
		"  /routes/1",
		"```",
		"",
		"prints",
		"",
		"```",
		"created tenant acme on shard shard-b",
		"OK rev=2",
		"```",
		"",
		"```",
		"$ confetti kv get --tenant nope x",
		"Error: meta: tenant not found",
		"$ confetti tenant list",
		"acme shard-a",
		"```",
		"",
		"<!-- readme-test: not run: make test runs itself -->",
		"```sh",
		"make test",
		"```",
		"",
		"```",
		" writers ──► proxy",
		"```",
	}, "\n")
	got, err := ParseReadme(md)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("%d scripts, want 4: %+v", len(got), got)
	}
	want := []string{"export PATH=$PWD/bin:$PATH", "confetti tenant create acme", `confetti kv put --tenant acme /routes/1 '{"uri":"/#x"}'`, "confetti kv get --tenant acme /routes/1"}
	if strings.Join(got[0].Commands, "\n") != strings.Join(want, "\n") {
		t.Errorf("commands %q, want %q", got[0].Commands, want)
	}
	if len(got[0].Expect) != 2 || got[0].Line != 3 {
		t.Errorf("first script %+v: want the printed block as its output, at line 3", got[0])
	}
	if !got[1].Failing || got[1].Commands[0] != "confetti kv get --tenant nope x" || got[2].Failing || got[2].Expect[0] != "acme shard-a" {
		t.Errorf("transcript scripts %+v, %+v", got[1], got[2])
	}
	if got[3].Kind != NotRun || got[3].Reason != "make test runs itself" {
		t.Errorf("annotated block %+v", got[3])
	}
}

// The comparison sees what drifts (a revision is a pattern, a value is
// not; an extra line fails) and what does not.
func TestCompareReportsDrift(t *testing.T) {
	want := []string{`gateway stable 1 mod_revision 6`, `gray zone-ab version 2 labels "zone in (a,b)" priority 5`, `token=abc ...`}
	for _, tc := range []struct {
		name, out string
		drift     bool
	}{
		{name: "other revision and token", out: "gateway stable 1 mod_revision 13\ngray zone-ab version 2 labels \"zone in (a,b)\" priority 5\ntoken=xyz and more"},
		{name: "other stable version", out: "gateway stable 2 mod_revision 13\ngray zone-ab version 2 labels \"zone in (a,b)\" priority 5\ntoken=xyz", drift: true},
		{name: "a line the README omits", out: "gateway stable 1 mod_revision 6\ngray zone-ab version 2 labels \"zone in (a,b)\" priority 5\ntoken=x\nplan running", drift: true},
		{name: "a line missing", out: "gateway stable 1 mod_revision 6", drift: true},
	} {
		if d := Compare(want, tc.out); (d != "") != tc.drift {
			t.Errorf("%s: diff %q, want drift %v", tc.name, d, tc.drift)
		}
	}
	if d := Compare([]string{"first", "...", "last"}, "first\na\nb\nlast"); d != "" {
		t.Errorf("a ... line should match any lines: %s", d)
	}
}

// The README itself parses: every block is a script or a known kind.
func TestReadmeParses(t *testing.T) {
	text, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	scripts, err := ParseReadme(string(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) < 10 {
		t.Fatalf("%d scripts in the README", len(scripts))
	}
}
