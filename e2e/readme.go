package e2e

import (
	"fmt"
	"regexp"
	"strings"
)

// The README is a test: TestE2EReadme runs its command blocks, in order,
// against `confetti dev` and compares what they print with what the
// README shows. This file reads the README into scripts and compares
// outputs; readme_e2e_test.go runs them.
//
// Blocks:
//
//   - A ```sh block holds commands, one per line (a line ending in \
//     continues on the next). Lines that are only a # comment, and a
//     trailing "  # comment", are explanations for the reader.
//   - A plain ``` block right after a sh block, introduced by a line of
//     prose containing "prints", is what that block's commands print, in
//     order.
//   - A plain ``` block whose lines start with "$ " is a transcript: each
//     "$ command" is followed by what it prints. A command whose output
//     starts with "Error:" must fail; every other command must succeed.
//   - Any other plain block (a diagram, a table) is not run.
//
// Annotations, an HTML comment on the line before a block's fence:
//
//   - <!-- readme-test: background -->: the block's commands run until
//     stopped (a gateway in another terminal): they start in the
//     background and their output is collected.
//   - <!-- readme-test: output of background -->: a plain block of lines
//     that the background commands print, in order per command (the
//     lines of one command share the prefix before its first ":").
//   - <!-- readme-test: stop NAME -->: before the block runs, the
//     background command whose line contains NAME stops (as Ctrl-C).
//   - <!-- readme-test: eventually -->: the block's read-only commands
//     are run again until they print what the README shows (within a
//     minute): what they show depends on time passing.
//   - <!-- readme-test: not run: REASON -->: the block cannot run against
//     dev (it is dev's own set-up, or needs docker or other tools);
//     REASON names what runs it. Its `confetti` commands are still parsed
//     by the real command tree, and its `make` targets must exist.
//
// Substitutions in commands: the addresses of dev's defaults
// (127.0.0.1:77xx, localhost:77xx) become those of the dev under test,
// read from its banner; `<token>` is the last token printed, `<id>` the
// last API key id printed, `<rev>` the last mod_revision printed;
// `export OP=cft_...` and `export DEMO_KEY=cft_...` set the operator and
// demo keys of the banner, and `export KEY=cft_...` the last key secret
// printed. Background commands see what the blocks before them exported.
//
// Outputs are compared line by line after normalising what differs from
// run to run (see normalize); "..." within an expected line matches
// anything, and a line that is only "..." matches any number of lines.

// ScriptKind says how a script runs.
type ScriptKind int

const (
	// Run runs the commands and compares their output, if shown.
	Run ScriptKind = iota
	// Background starts the commands and collects their output.
	Background
	// BackgroundOutput compares the collected output of the background
	// commands.
	BackgroundOutput
	// NotRun only parses the commands.
	NotRun
)

// Script is one README block to run: its commands and what they print.
type Script struct {
	// Line is the README line of the block's opening fence.
	Line int
	Kind ScriptKind
	// Commands are the block's commands.
	Commands []string
	// Expect is what the commands print, in order; nil when the README
	// shows nothing. Failing marks a transcript command whose output is
	// an error.
	Expect  []string
	Failing bool
	// Eventually runs the commands again until they print Expect.
	Eventually bool
	// Stop names a background command to stop first.
	Stop string
	// Reason says why a NotRun block is not run.
	Reason string
}

var annotationRE = regexp.MustCompile(`^<!--\s*readme-test:\s*(.*?)\s*-->$`)

// ParseReadme reads the README into the scripts of its blocks, in order.
func ParseReadme(text string) ([]Script, error) {
	lines := strings.Split(text, "\n")
	var out []Script
	for i := 0; i < len(lines); i++ {
		fence := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(fence, "```") {
			continue
		}
		lang := strings.TrimPrefix(fence, "```")
		start := i
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, lines[i])
		}
		if i == len(lines) {
			return nil, fmt.Errorf("README line %d: block never closed", start+1)
		}
		note := annotation(lines, start)
		s := Script{Line: start + 1}
		switch {
		case strings.HasPrefix(note, "not run:"):
			s.Kind, s.Reason = NotRun, strings.TrimSpace(strings.TrimPrefix(note, "not run:"))
		case note == "background":
			s.Kind = Background
		case note == "output of background":
			s.Kind = BackgroundOutput
		case strings.HasPrefix(note, "stop "):
			s.Stop = strings.TrimSpace(strings.TrimPrefix(note, "stop "))
		case note == "eventually":
			s.Eventually = true
		case note != "":
			return nil, fmt.Errorf("README line %d: unknown annotation %q", start, note)
		}
		switch {
		case lang == "sh":
			cmds, err := commands(body, start+2)
			if err != nil {
				return nil, err
			}
			s.Commands = cmds
			out = append(out, s)
		case lang != "":
			// Another language: an example for the reader (YAML, Go).
		case s.Kind == BackgroundOutput:
			s.Expect = body
			out = append(out, s)
		case len(body) > 0 && strings.HasPrefix(body[0], "$ "):
			ts, err := transcript(s, body)
			if err != nil {
				return nil, err
			}
			out = append(out, ts...)
		case introducedByPrints(lines, start) && len(out) > 0 && out[len(out)-1].Expect == nil && len(out[len(out)-1].Commands) > 0:
			out[len(out)-1].Expect = body
		}
	}
	return out, nil
}

// annotation is the readme-test annotation on the line before a fence.
func annotation(lines []string, fence int) string {
	if fence == 0 {
		return ""
	}
	if m := annotationRE.FindStringSubmatch(strings.TrimSpace(lines[fence-1])); m != nil {
		return m[1]
	}
	return ""
}

// introducedByPrints reports whether the prose right before a fence says
// the block is what the commands above print.
func introducedByPrints(lines []string, fence int) bool {
	for j := fence - 1; j >= 0; j-- {
		l := strings.TrimSpace(lines[j])
		if l == "" {
			continue
		}
		return strings.Contains(l, "prints")
	}
	return false
}

// commands are a sh block's commands, comments stripped.
func commands(body []string, firstLine int) ([]string, error) {
	var out []string
	var cont strings.Builder
	for _, raw := range body {
		l := strings.TrimSpace(raw)
		if cont.Len() == 0 && (l == "" || strings.HasPrefix(l, "#")) {
			continue
		}
		l = stripComment(l)
		if strings.HasSuffix(l, "\\") {
			cont.WriteString(strings.TrimSpace(strings.TrimSuffix(l, "\\")))
			cont.WriteByte(' ')
			continue
		}
		cont.WriteString(l)
		out = append(out, strings.TrimSpace(cont.String()))
		cont.Reset()
	}
	if cont.Len() > 0 {
		return nil, fmt.Errorf("README line %d: the block ends in a continued line", firstLine+len(body))
	}
	return out, nil
}

// stripComment removes a trailing "# comment" outside quotes.
func stripComment(l string) string {
	var quote rune
	for i, r := range l {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '#' && i > 0 && (l[i-1] == ' ' || l[i-1] == '\t'):
			return strings.TrimSpace(l[:i])
		}
	}
	return l
}

// transcript splits a "$ command" block into one script per command.
func transcript(base Script, body []string) ([]Script, error) {
	var out []Script
	for _, l := range body {
		if cmd, ok := strings.CutPrefix(l, "$ "); ok {
			s := base
			s.Commands = []string{stripComment(strings.TrimSpace(cmd))}
			s.Expect = []string{}
			out = append(out, s)
			continue
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("README line %d: a transcript must start with a $ command", base.Line+1)
		}
		cur := &out[len(out)-1]
		cur.Expect = append(cur.Expect, l)
		if len(cur.Expect) == 1 && strings.HasPrefix(l, "Error:") {
			cur.Failing = true
		}
	}
	return out, nil
}

// normalizers replace what differs from run to run with a placeholder,
// in both the README's lines and the commands' output.
var normalizers = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`token=\S+`), "token=<TOKEN>"},
	{regexp.MustCompile(`^id: \S+$`), "id: <TOKEN>"},
	{regexp.MustCompile(`"token":\s*"[^"]*"`), `"token":"<TOKEN>"`},
	{regexp.MustCompile(`\b(rev|revision|mod_revision|create_revision)([=: ]|: | is )\d+`), "$1$2<REV>"},
	{regexp.MustCompile(`"(revision|mod_revision|create_revision)":\s*"?\d+"?`), `"$1":<REV>`},
	{regexp.MustCompile(`\b(ETag|Etag): "\d+"`), `$1: "<REV>"`},
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`), "<TIME>"},
	{regexp.MustCompile(`"(create_time|time)":\s*"\d+"`), `"$1":"<TIME>"`},
	{regexp.MustCompile(`lease=\d+`), "lease=<LEASE>"},
	{regexp.MustCompile(`"lease":\s*"\d+"`), `"lease":"<LEASE>"`},
	{regexp.MustCompile(`cft_[a-z0-9]+_[A-Za-z0-9_\-]+`), "<APIKEY>"},
	{regexp.MustCompile(`"id":\s*"[a-z0-9]{16}"`), `"id":"<KEYID>"`},
	{regexp.MustCompile(`\bkey [a-z0-9]{16}\b`), "key <KEYID>"},
	{regexp.MustCompile(`^[a-z0-9]{16} `), "<KEYID> "},
	{regexp.MustCompile(`\bshard-[a-z]\b`), "shard-<S>"},
	{regexp.MustCompile(`\b(127\.0\.0\.1|localhost):\d+`), "<LOOPBACK>"},
	{regexp.MustCompile(`\bbytes=\d+`), "bytes=<N>"},
}

// normalize replaces the parts of a line that differ from run to run.
// protojson puts a space after some commas and colons, differently from
// build to build; the spaces go before the other patterns apply.
func normalize(l string) string {
	l = strings.TrimRight(l, " \t\r")
	l = strings.ReplaceAll(strings.ReplaceAll(l, `", "`, `","`), `": `, `":`)
	l = strings.ReplaceAll(strings.ReplaceAll(l, `}, "`, `},"`), `], "`, `],"`)
	for _, n := range normalizers {
		l = n.re.ReplaceAllString(l, n.repl)
	}
	return l
}

// lineMatches reports whether an output line matches a README line, both
// normalised; "..." in want matches anything.
func lineMatches(want, got string) bool {
	if !strings.Contains(want, "...") {
		return want == got
	}
	parts := strings.Split(want, "...")
	for k := range parts {
		parts[k] = regexp.QuoteMeta(parts[k])
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$").MatchString(got)
}

// Compare compares output with what the README shows and returns "" when
// they match, else a diff saying which lines differ.
func Compare(want []string, output string) string {
	got := strings.Split(strings.TrimRight(output, "\n"), "\n")
	if output == "" {
		got = nil
	}
	var w, g []string
	for _, l := range want {
		w = append(w, normalize(l))
	}
	for _, l := range got {
		g = append(g, normalize(l))
	}
	if matchLines(w, g) {
		return ""
	}
	var b strings.Builder
	b.WriteString("the README shows:\n")
	for _, l := range want {
		b.WriteString("  | " + l + "\n")
	}
	b.WriteString("the command printed:\n")
	for _, l := range got {
		b.WriteString("  | " + l + "\n")
	}
	return b.String()
}

// matchLines matches normalised lines; a want line "..." matches any
// number of got lines.
func matchLines(want, got []string) bool {
	if len(want) == 0 {
		return len(got) == 0
	}
	if want[0] == "..." {
		for k := 0; k <= len(got); k++ {
			if matchLines(want[1:], got[k:]) {
				return true
			}
		}
		return false
	}
	return len(got) > 0 && lineMatches(want[0], got[0]) && matchLines(want[1:], got[1:])
}

// ContainsInOrder reports whether got holds every line of want, in order,
// after normalising, with other lines between; it returns the first line
// of want it did not find.
func ContainsInOrder(want []string, got string) (string, bool) {
	g := strings.Split(got, "\n")
	k := 0
	for _, w := range want {
		w = normalize(w)
		for k < len(g) && !lineMatches(w, normalize(g[k])) {
			k++
		}
		if k == len(g) {
			return w, false
		}
		k++
	}
	return "", true
}
