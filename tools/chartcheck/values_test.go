package chartcheck

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// paramRE finds the "## @param key description" lines of values.yaml.
var paramRE = regexp.MustCompile(`(?m)^\s*## @param (\S+) `)

// TestChartValuesDocumented: every value of values.yaml is named by an
// @param line (itself or a parent map that is documented whole), and every
// @param has its row in the README's values table.
func TestChartValuesDocumented(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	params := map[string]bool{}
	for _, m := range paramRE.FindAllStringSubmatch(string(raw), -1) {
		params[m[1]] = true
		if !strings.Contains(string(readme), "| `"+m[1]+"` |") {
			t.Errorf("value %s has no row in %s", m[1], filepath.Join(chartDir, "README.md"))
		}
	}
	var vals map[string]any
	if err := yaml.Unmarshal(raw, &vals); err != nil {
		t.Fatal(err)
	}
	var leaves []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		m, ok := v.(map[string]any)
		if !ok || len(m) == 0 || params[prefix] {
			leaves = append(leaves, prefix)
			return
		}
		for k, sub := range m {
			walk(strings.TrimPrefix(prefix+"."+k, "."), sub)
		}
	}
	walk("", vals)
	sort.Strings(leaves)
	for _, leaf := range leaves {
		documented := false
		for p := leaf; p != ""; p = p[:max(strings.LastIndexByte(p, '.'), 0)] {
			if params[p] {
				documented = true
				break
			}
		}
		if !documented {
			t.Errorf("value %s has no @param line in values.yaml", leaf)
		}
	}
	for p := range params {
		if !slicesContainsPrefix(leaves, p) {
			t.Errorf("@param %s names no value of values.yaml", p)
		}
	}
}

func slicesContainsPrefix(leaves []string, p string) bool {
	for _, l := range leaves {
		if l == p || strings.HasPrefix(l, p+".") {
			return true
		}
	}
	return false
}
