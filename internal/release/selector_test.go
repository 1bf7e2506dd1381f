package release

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSelector(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		canonical string
		match     []map[string]string
		noMatch   []map[string]string
	}{
		{
			name: "equals", in: "zone=a", canonical: "zone=a",
			match:   []map[string]string{{"zone": "a"}, {"zone": "a", "x": "y"}},
			noMatch: []map[string]string{{"zone": "b"}, {}, nil},
		},
		{
			name: "double equals", in: "zone==a", canonical: "zone=a",
			match:   []map[string]string{{"zone": "a"}},
			noMatch: []map[string]string{{"zone": "b"}},
		},
		{
			name: "not equals", in: "tier!=edge", canonical: "tier!=edge",
			match:   []map[string]string{{"tier": "core"}, {}, nil},
			noMatch: []map[string]string{{"tier": "edge"}},
		},
		{
			name: "in", in: "zone in (b,a,b)", canonical: "zone in (a,b)",
			match:   []map[string]string{{"zone": "a"}, {"zone": "b"}},
			noMatch: []map[string]string{{"zone": "c"}, {}},
		},
		{
			name: "notin", in: "zone notin (a, b)", canonical: "zone notin (a,b)",
			match:   []map[string]string{{"zone": "c"}, {}},
			noMatch: []map[string]string{{"zone": "a"}, {"zone": "b"}},
		},
		{
			name: "exists", in: "canary", canonical: "canary",
			match:   []map[string]string{{"canary": ""}, {"canary": "yes"}},
			noMatch: []map[string]string{{"zone": "a"}, nil},
		},
		{
			name: "absent", in: "!canary", canonical: "!canary",
			match:   []map[string]string{{"zone": "a"}, nil},
			noMatch: []map[string]string{{"canary": "yes"}},
		},
		{
			name: "and", in: " zone in (a,b) , tier != edge ", canonical: "zone in (a,b),tier!=edge",
			match:   []map[string]string{{"zone": "a", "tier": "core"}, {"zone": "b"}},
			noMatch: []map[string]string{{"zone": "a", "tier": "edge"}, {"zone": "c", "tier": "core"}},
		},
		{
			name: "key with dots, dashes and slash", in: "app.example.com/role=api-v2_x", canonical: "app.example.com/role=api-v2_x",
			match: []map[string]string{{"app.example.com/role": "api-v2_x"}},
		},
		{
			name: "key named like an operator", in: "in=notin,notin in (in)", canonical: "in=notin,notin in (in)",
			match: []map[string]string{{"in": "notin", "notin": "in"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := ParseSelector(tt.in)
			if err != nil {
				t.Fatalf("ParseSelector(%q): %v", tt.in, err)
			}
			if got := sel.String(); got != tt.canonical {
				t.Errorf("String() = %q, want %q", got, tt.canonical)
			}
			again, err := ParseSelector(sel.String())
			if err != nil || again.String() != tt.canonical {
				t.Errorf("canonical form %q does not parse back: %v, %q", tt.canonical, err, again.String())
			}
			for _, l := range tt.match {
				if !sel.Matches(l) {
					t.Errorf("%q does not match %v, want a match", tt.in, l)
				}
			}
			for _, l := range tt.noMatch {
				if sel.Matches(l) {
					t.Errorf("%q matches %v, want no match", tt.in, l)
				}
			}
		})
	}
}

func TestParseSelectorErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		// want lists substrings of the error message.
		want []string
	}{
		{name: "empty", in: "", want: []string{"position 1", "expected a label key", "found end of input"}},
		{name: "blank", in: "   ", want: []string{"position 4", "expected a label key"}},
		{name: "trailing comma", in: "zone=a,", want: []string{"position 8", "expected a label key", "found end of input"}},
		{name: "leading comma", in: ",zone=a", want: []string{"position 1", "expected a label key", `found ","`}},
		{name: "missing value", in: "zone=", want: []string{"position 6", `a value for key "zone"`}},
		{name: "missing value before comma", in: "zone!=,a", want: []string{"position 7", `a value for key "zone"`, `found ","`}},
		{name: "bad operator", in: "zone>a", want: []string{"position 5", `"=", "==", "!=", "in", "notin"`, `found ">"`}},
		{name: "unknown word", in: "zone within (a)", want: []string{"position 6", `after key "zone"`, `found "w"`}},
		{name: "two values", in: "zone=a b", want: []string{"position 8", `"," between requirements`, `found "b"`}},
		{name: "in without list", in: "zone in a", want: []string{"position 9", `"(" to open the value list`}},
		{name: "unclosed list", in: "zone in (a,b", want: []string{"position 13", `"," or ")"`, "found end of input"}},
		{name: "empty list", in: "zone in ()", want: []string{"position 10", `a value in the list of key "zone"`, `found ")"`}},
		{name: "empty list value", in: "zone in (a,,b)", want: []string{"position 12", `a value in the list`}},
		{name: "bad value character", in: "zone in (a;b)", want: []string{"position 11", `"," or ")"`, `found ";"`}},
		{name: "bang without key", in: "!", want: []string{"position 2", `a label key after "!"`}},
		{name: "bang with operator", in: "!zone=a", want: []string{"position 6", `"," between requirements`, `found "="`}},
		{name: "non-ascii key", in: "zöne=a", want: []string{"position 2", `"=", "==", "!="`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSelector(tt.in)
			if err == nil {
				t.Fatalf("ParseSelector(%q) succeeded, want an error", tt.in)
			}
			if !errors.Is(err, ErrInvalidSelector) {
				t.Errorf("error %v does not wrap ErrInvalidSelector", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestZeroSelectorMatchesEverything(t *testing.T) {
	var s Selector
	if !s.Matches(nil) || !s.Matches(map[string]string{"a": "b"}) {
		t.Error("zero Selector does not match every label set")
	}
}

func TestValidItemName(t *testing.T) {
	tests := []struct {
		name string
		item string
		ok   bool
	}{
		{name: "simple", item: "routes", ok: true},
		{name: "all classes", item: "My_routes-v1.json", ok: true},
		{name: "longest", item: strings.Repeat("a", 128), ok: true},
		{name: "empty", item: ""},
		{name: "too long", item: strings.Repeat("a", 129)},
		{name: "slash", item: "a/b"},
		{name: "space", item: "a b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidItemName(tt.item)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidItemName(%q) = %v, want ok %v", tt.item, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidItem) {
				t.Errorf("error %v does not wrap ErrInvalidItem", err)
			}
		})
	}
}
