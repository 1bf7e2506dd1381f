package release

import (
	"fmt"
	"strings"
	"testing"
)

func TestUnifiedDiff(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want string
	}{
		{name: "equal", a: "x\ny\n", b: "x\ny\n", want: ""},
		{
			name: "one line changed",
			a:    "a\nb\nc\n", b: "a\nB\nc\n",
			want: "--- v1\n+++ v2\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n",
		},
		{
			name: "from empty",
			a:    "", b: "x\ny\n",
			want: "--- v1\n+++ v2\n@@ -0,0 +1,2 @@\n+x\n+y\n",
		},
		{
			name: "to empty",
			a:    "x\n", b: "",
			want: "--- v1\n+++ v2\n@@ -1 +0,0 @@\n-x\n",
		},
		{
			name: "missing final newline",
			a:    "a\nb", b: "a\nb\n",
			want: "--- v1\n+++ v2\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n",
		},
		{
			name: "two hunks",
			a:    "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n", b: "1\nX\n3\n4\n5\n6\n7\n8\n9\n10\n11\nY\n",
			want: "--- v1\n+++ v2\n@@ -1,5 +1,5 @@\n 1\n-2\n+X\n 3\n 4\n 5\n@@ -9,4 +9,4 @@\n 9\n 10\n 11\n-12\n+Y\n",
		},
		{
			name: "close changes share a hunk",
			a:    "1\n2\n3\n4\n5\n6\n7\n", b: "1\nX\n3\n4\n5\n6\nY\n",
			want: "--- v1\n+++ v2\n@@ -1,7 +1,7 @@\n 1\n-2\n+X\n 3\n 4\n 5\n 6\n-7\n+Y\n",
		},
		{
			name: "insertion in the middle",
			a:    "a\nb\n", b: "a\nnew\nb\n",
			want: "--- v1\n+++ v2\n@@ -1,2 +1,3 @@\n a\n+new\n b\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := UnifiedDiff(tt.a, tt.b, "v1", "v2"); got != tt.want {
				t.Errorf("UnifiedDiff =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// TestUnifiedDiffApplies checks that the edit script turns a into b for
// inputs with many changes, past the bound where the diff gives up on
// being shortest, too.
func TestUnifiedDiffApplies(t *testing.T) {
	for _, n := range []int{10, 300, 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var a, b []string
			for i := range n {
				a = append(a, fmt.Sprintf("line %d\n", i))
				if i%3 != 0 {
					b = append(b, fmt.Sprintf("line %d\n", i))
				}
				if i%5 == 0 {
					b = append(b, fmt.Sprintf("new %d\n", i))
				}
			}
			edits := diffLines(a, b)
			var gotA, gotB strings.Builder
			for _, e := range edits {
				if e.op != '+' {
					gotA.WriteString(e.text)
				}
				if e.op != '-' {
					gotB.WriteString(e.text)
				}
			}
			if gotA.String() != strings.Join(a, "") || gotB.String() != strings.Join(b, "") {
				t.Fatal("edit script does not turn a into b")
			}
		})
	}
}
