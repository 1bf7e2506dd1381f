package release

import (
	"errors"
	"strings"
	"testing"

	"github.com/confetti-io/confetti/api/confettipb"
)

func TestCheckRule(t *testing.T) {
	bp := func(n int32) *confettipb.Rule {
		return &confettipb.Rule{Rule: &confettipb.Rule_BasisPoints{BasisPoints: n}}
	}
	sel := func(s string) *confettipb.Rule { return &confettipb.Rule{Rule: &confettipb.Rule_Selector{Selector: s}} }
	ids := func(ids ...string) *confettipb.Rule {
		return &confettipb.Rule{Rule: &confettipb.Rule_Instances{Instances: &confettipb.InstanceList{Ids: ids}}}
	}
	tests := []struct {
		name    string
		rule    *confettipb.Rule
		wantErr error
		want    string
	}{
		{name: "percentage", rule: bp(1000)},
		{name: "everyone", rule: bp(10000)},
		{name: "zero percent", rule: bp(0), wantErr: ErrInvalidGray, want: "outside 1..10000"},
		{name: "over everyone", rule: bp(10001), wantErr: ErrInvalidGray, want: "outside 1..10000"},
		{name: "selector", rule: sel("zone in (a,b)")},
		{name: "bad selector", rule: sel("zone in (a"), wantErr: ErrInvalidSelector, want: "position 11"},
		{name: "instances", rule: ids("gw-1", "gw-2")},
		{name: "no instances", rule: ids(), wantErr: ErrInvalidGray, want: "lists no instances"},
		{name: "empty instance", rule: ids("gw-1", ""), wantErr: ErrInvalidGray, want: "empty instance id"},
		{name: "repeated instance", rule: ids("gw-1", "gw-1"), wantErr: ErrInvalidGray, want: `"gw-1" twice`},
		{name: "no rule", rule: nil, wantErr: ErrInvalidGray, want: "needs a rule"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckRule(tt.rule)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("CheckRule = %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestCheckPlanSteps(t *testing.T) {
	tests := []struct {
		name string
		plan *confettipb.Plan
		want string
	}{
		{name: "ok", plan: &confettipb.Plan{Steps: []int32{100, 1000, 10000}, BakeSeconds: 300, MaxNackBasisPoints: 100}},
		{name: "one step", plan: &confettipb.Plan{Steps: []int32{10000}}},
		{name: "no steps", plan: &confettipb.Plan{}, want: "needs steps"},
		{name: "not ascending", plan: &confettipb.Plan{Steps: []int32{1000, 1000, 10000}}, want: "ascending"},
		{name: "not ending at everyone", plan: &confettipb.Plan{Steps: []int32{100, 5000}}, want: "ends at 10000"},
		{name: "step out of range", plan: &confettipb.Plan{Steps: []int32{0, 10000}}, want: "outside 1..10000"},
		{name: "negative bake", plan: &confettipb.Plan{Steps: []int32{10000}, BakeSeconds: -1}, want: "bake time"},
		{name: "nack limit", plan: &confettipb.Plan{Steps: []int32{10000}, MaxNackBasisPoints: 10001}, want: "NACK limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPlanSteps(tt.plan)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckPlanSteps: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPlan) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CheckPlanSteps = %v, want ErrInvalidPlan containing %q", err, tt.want)
			}
		})
	}
}

func TestValidGrayID(t *testing.T) {
	for _, ok := range []string{"v2", "canary.zone-a_1"} {
		if err := ValidGrayID(ok); err != nil {
			t.Errorf("ValidGrayID(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a/b", strings.Repeat("x", 65)} {
		if err := ValidGrayID(bad); !errors.Is(err, ErrInvalidGray) {
			t.Errorf("ValidGrayID(%q) = %v, want ErrInvalidGray", bad, err)
		}
	}
}
