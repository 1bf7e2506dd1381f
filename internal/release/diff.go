package release

import (
	"fmt"
	"slices"
	"strings"
)

// diffContext is the number of unchanged lines around each change in a
// unified diff, as in diff -u.
const diffContext = 3

// maxDiffEdits bounds the work of the line diff: content that needs more
// insertions plus deletions is shown as everything removed and everything
// added, which is still a correct diff.
const maxDiffEdits = 4000

// edit is one line of an edit script: kept (' '), deleted ('-') or
// inserted ('+').
type edit struct {
	op   byte
	text string
}

// UnifiedDiff returns the unified diff (diff -u format, three lines of
// context) that turns a into b, with the labels in its --- and +++ lines;
// it is empty when a and b are equal. A last line without a newline is
// marked as diff marks it.
func UnifiedDiff(a, b, labelA, labelB string) string {
	if a == b {
		return ""
	}
	edits := diffLines(splitLines(a), splitLines(b))
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", labelA, labelB)
	for start := 0; start < len(edits); {
		first := slices.IndexFunc(edits[start:], func(e edit) bool { return e.op != ' ' })
		if first < 0 {
			break
		}
		first += start
		// The hunk runs to the last change that is at most 2*context
		// kept lines away from the one before it.
		last := first
		for i := first + 1; i < len(edits) && i-last <= 2*diffContext; i++ {
			if edits[i].op != ' ' {
				last = i
			}
		}
		lo, hi := max(0, first-diffContext), min(len(edits), last+diffContext+1)
		writeHunk(&sb, edits, lo, hi)
		start = hi
	}
	return sb.String()
}

// writeHunk writes edits[lo:hi] as one hunk.
func writeHunk(sb *strings.Builder, edits []edit, lo, hi int) {
	// Line numbers before the hunk, in a and in b.
	var aLine, bLine int
	for _, e := range edits[:lo] {
		if e.op != '+' {
			aLine++
		}
		if e.op != '-' {
			bLine++
		}
	}
	var aCount, bCount int
	for _, e := range edits[lo:hi] {
		if e.op != '+' {
			aCount++
		}
		if e.op != '-' {
			bCount++
		}
	}
	fmt.Fprintf(sb, "@@ -%s +%s @@\n", hunkRange(aLine, aCount), hunkRange(bLine, bCount))
	for _, e := range edits[lo:hi] {
		sb.WriteByte(e.op)
		sb.WriteString(e.text)
		if !strings.HasSuffix(e.text, "\n") {
			sb.WriteString("\n\\ No newline at end of file\n")
		}
	}
}

// hunkRange formats a hunk's start and length as diff does: an empty
// range starts at the line before it, and a length of one is left out.
func hunkRange(before, count int) string {
	switch count {
	case 0:
		return fmt.Sprintf("%d,0", before)
	case 1:
		return fmt.Sprintf("%d", before+1)
	}
	return fmt.Sprintf("%d,%d", before+1, count)
}

// splitLines splits s after each newline; the last line may lack one.
func splitLines(s string) []string {
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// diffLines returns a shortest edit script from a to b (Myers' greedy
// algorithm), or, past maxDiffEdits, all of a deleted and all of b
// inserted.
func diffLines(a, b []string) []edit {
	n, m := len(a), len(b)
	off := n + m + 1
	v := make([]int, 2*off+1)
	// trace[d] holds v[-d..d] after round d, for the walk back.
	var trace [][]int
	for d := 0; d <= min(n+m, maxDiffEdits); d++ {
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[off+k-1] < v[off+k+1]) {
				x = v[off+k+1]
			} else {
				x = v[off+k-1] + 1
			}
			y := x - k
			for x < n && y < m && a[x] == b[y] {
				x++
				y++
			}
			v[off+k] = x
			if x >= n && y >= m {
				trace = append(trace, slices.Clone(v[off-d:off+d+1]))
				return walkBack(a, b, trace)
			}
		}
		trace = append(trace, slices.Clone(v[off-d:off+d+1]))
	}
	out := make([]edit, 0, n+m)
	for _, l := range a {
		out = append(out, edit{op: '-', text: l})
	}
	for _, l := range b {
		out = append(out, edit{op: '+', text: l})
	}
	return out
}

// walkBack turns the rounds of diffLines into the edit script, from the
// end of both inputs back to their start.
func walkBack(a, b []string, trace [][]int) []edit {
	x, y := len(a), len(b)
	var out []edit
	for d := len(trace) - 1; d > 0; d-- {
		prev := trace[d-1]
		at := func(k int) int { return prev[k+d-1] }
		k := x - y
		prevK := k - 1
		if k == -d || (k != d && at(k-1) < at(k+1)) {
			prevK = k + 1
		}
		prevX := at(prevK)
		prevY := prevX - prevK
		for x > prevX && y > prevY {
			x--
			y--
			out = append(out, edit{op: ' ', text: a[x]})
		}
		if x == prevX {
			y--
			out = append(out, edit{op: '+', text: b[y]})
		} else {
			x--
			out = append(out, edit{op: '-', text: a[x]})
		}
	}
	for x > 0 && y > 0 {
		x--
		y--
		out = append(out, edit{op: ' ', text: a[x]})
	}
	slices.Reverse(out)
	return out
}
