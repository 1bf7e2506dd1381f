package keys

import "testing"

func TestItemKeys(t *testing.T) {
	if got, want := ItemVersion("acme", "routes", 7), "/confetti/t/acme/cfg/routes/v/00000000000000000007"; got != want {
		t.Errorf("ItemVersion = %q, want %q", got, want)
	}
	if got, want := ItemRelease("acme", "routes"), "/confetti/t/acme/cfg/routes/release"; got != want {
		t.Errorf("ItemRelease = %q, want %q", got, want)
	}
	if got, want := ItemSchema("acme", "routes"), "/confetti/t/acme/cfg/routes/schema"; got != want {
		t.Errorf("ItemSchema = %q, want %q", got, want)
	}
	if got, want := ItemLog("acme", "routes", 12), "/confetti/t/acme/cfg/routes/log/00000000000000000012"; got != want {
		t.Errorf("ItemLog = %q, want %q", got, want)
	}
	if got, want := Plan("acme", "routes"), "/confetti/plans/acme/routes"; got != want {
		t.Errorf("Plan = %q, want %q", got, want)
	}
}

func TestParseCfg(t *testing.T) {
	tests := []struct {
		name string
		rel  string
		item string
		kind CfgKind
		n    int64
		ok   bool
	}{
		{name: "version", rel: "cfg/routes/v/00000000000000000007", item: "routes", kind: CfgVersion, n: 7, ok: true},
		{name: "release", rel: "cfg/routes/release", item: "routes", kind: CfgRelease, ok: true},
		{name: "schema", rel: "cfg/routes/schema", item: "routes", kind: CfgSchema, ok: true},
		{name: "log", rel: "cfg/a.b/log/00000000000000000012", item: "a.b", kind: CfgLog, n: 12, ok: true},
		{name: "short version", rel: "cfg/routes/v/7", item: "routes", kind: CfgOther, ok: true},
		{name: "other", rel: "cfg/routes/x", item: "routes", kind: CfgOther, ok: true},
		{name: "no item", rel: "cfg/routes", ok: false},
		{name: "not cfg", rel: "kv/routes/release", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			item, kind, n, ok := ParseCfg(tt.rel)
			if item != tt.item || kind != tt.kind || n != tt.n || ok != tt.ok {
				t.Errorf("ParseCfg(%q) = (%q, %v, %d, %v), want (%q, %v, %d, %v)", tt.rel, item, kind, n, ok, tt.item, tt.kind, tt.n, tt.ok)
			}
		})
	}
}

func TestSplitPlan(t *testing.T) {
	tenant, item, ok := SplitPlan(Plan("acme", "routes"))
	if !ok || tenant != "acme" || item != "routes" {
		t.Errorf("SplitPlan = (%q, %q, %v)", tenant, item, ok)
	}
	for _, bad := range []string{"/confetti/plans/acme", "/confetti/plans/acme/", "/confetti/plans//x", "/confetti/t/acme/x", "/confetti/plans/a/b/c"} {
		if _, _, ok := SplitPlan(bad); ok {
			t.Errorf("SplitPlan(%q) ok, want not ok", bad)
		}
	}
}
