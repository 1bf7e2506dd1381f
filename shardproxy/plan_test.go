package shardproxy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/testcluster"
)

// fakeRollouts is a RolloutReader whose gateways the test sets.
type fakeRollouts struct {
	mu  sync.Mutex
	gws []*pb.GatewayRollout
	err error
}

var _ RolloutReader = (*fakeRollouts)(nil)

func (f *fakeRollouts) Rollout(_ context.Context, tenant, item string) ([]*pb.GatewayRollout, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gws, f.err
}

// set reports n gateways on version: running, pending and nacked of
// them in that order, the nacked ones with error.
func (f *fakeRollouts) set(version int64, running, pending, nacked int, errMsg string) {
	var gws []*pb.GatewayRollout
	add := func(n int, st pb.GatewayRollout_State, e string) {
		for range n {
			gws = append(gws, &pb.GatewayRollout{InstanceId: fmt.Sprintf("gw-%03d", len(gws)), Version: version, State: st, Error: e, Time: int64(len(gws))})
		}
	}
	add(running, pb.GatewayRollout_RUNNING, "")
	add(pending, pb.GatewayRollout_PENDING, "")
	add(nacked, pb.GatewayRollout_NACKED, errMsg)
	f.mu.Lock()
	f.gws, f.err = gws, nil
	f.mu.Unlock()
}

// planFixture is an item with versions 1 and 2 and a running plan of
// version 2 over steps 1%, 10%, 100%, baking 60 s each, pausing above 1%
// NACKs.
func planFixture(t *testing.T, tenant string) (*api, *fakeClock, *fakeRollouts) {
	t.Helper()
	a, clock, ro := releaseAPI(t, tenant)
	a.publish(t, tenant, "cfg", "1")
	a.publish(t, tenant, "cfg", "2")
	rel, err := a.releases.StartPlan(testCtx(t), &pb.StartPlanRequest{Tenant: tenant, Item: "cfg", Reason: "roll v2",
		Plan: &pb.Plan{Version: 2, Steps: []int32{100, 1000, 10000}, BakeSeconds: 60, MaxNackBasisPoints: 100}})
	if err != nil {
		t.Fatal(err)
	}
	if p := rel.GetPlan(); p.GetState() != pb.Plan_RUNNING || p.GetGrayId() != "v2" || p.GetStepStartTime() != clock.Now().Unix() {
		t.Fatalf("plan = %v", p)
	}
	if g := rel.GetGrays(); len(g) != 1 || g[0].GetRule().GetBasisPoints() != 100 || g[0].GetVersion() != 2 {
		t.Fatalf("plan gray = %v", g)
	}
	return a, clock, ro
}

// step runs one controller pass and returns the release after it.
func step(t *testing.T, a *api, tenant string) *pb.Release {
	t.Helper()
	a.proxy.plans.pass(testCtx(t))
	rel, err := a.releases.GetRelease(testCtx(t), &pb.GetReleaseRequest{Tenant: tenant, Item: "cfg"})
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

func grayBP(rel *pb.Release) int32 {
	if len(rel.GetGrays()) != 1 {
		return -1
	}
	return rel.GetGrays()[0].GetRule().GetBasisPoints()
}

// planIndexed reports whether the shard's plan index lists the item.
func planIndexed(t *testing.T, tenant string) bool {
	t.Helper()
	resp, err := sharedClusters(t).raw[shardOf(t, tenant)].Get(testCtx(t), keys.Plan(tenant, "cfg"))
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.Kvs) == 1
}

func TestPlanReachesFullRolloutWithAllACKs(t *testing.T) {
	const tenant = "plan-done"
	a, clock, ro := planFixture(t, tenant)
	if !planIndexed(t, tenant) {
		t.Fatal("running plan missing from the plan index")
	}
	ro.set(2, 3, 0, 0, "")
	// Before the bake ends nothing moves.
	clock.Advance(59 * time.Second)
	if rel := step(t, a, tenant); rel.GetPlan().GetCurrentStep() != 0 || grayBP(rel) != 100 {
		t.Fatalf("plan moved before its bake ended: %v", rel)
	}
	for i, bp := range []int32{1000, 10000} {
		clock.Advance(time.Second)
		if i > 0 {
			clock.Advance(59 * time.Second)
		}
		ro.set(2, 10*(i+1), 0, 0, "")
		rel := step(t, a, tenant)
		if rel.GetPlan().GetCurrentStep() != int32(i+1) || grayBP(rel) != bp || rel.GetPlan().GetStepStartTime() != clock.Now().Unix() {
			t.Fatalf("after step %d: %v, want gray at %d bp", i+1, rel, bp)
		}
	}
	clock.Advance(time.Minute)
	rel := step(t, a, tenant)
	if rel.GetStable() != 2 || len(rel.GetGrays()) != 0 || rel.GetPlan().GetState() != pb.Plan_DONE {
		t.Fatalf("after the last bake: %v, want stable 2, no gray, plan done", rel)
	}
	if planIndexed(t, tenant) {
		t.Error("finished plan still in the plan index")
	}
	log, err := a.releases.Log(testCtx(t), &pb.ReleaseLogRequest{Tenant: tenant, Item: "cfg"})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range log.GetEntries() {
		actions = append(actions, e.GetAuthor()+":"+e.GetAction())
	}
	if got, want := strings.Join(actions, " "), "anonymous:create anonymous:start-plan plan-controller:plan-step plan-controller:plan-step plan-controller:plan-done"; got != want {
		t.Errorf("log actions %q", got)
	}
}

func TestPlanPausesOnNACKsAndResumes(t *testing.T) {
	const tenant = "plan-pause"
	a, clock, ro := planFixture(t, tenant)
	// 2 of 100 gateways NACK: 200 basis points, over the limit of 100.
	ro.set(2, 95, 3, 2, "invalid route")
	clock.Advance(time.Second)
	rel := step(t, a, tenant)
	p := rel.GetPlan()
	if p.GetState() != pb.Plan_PAUSED || !strings.Contains(p.GetReason(), "2 of 100 gateways NACKed version 2") || !strings.Contains(p.GetReason(), "invalid route") {
		t.Fatalf("plan = %v, want paused naming the NACKs", p)
	}
	if grayBP(rel) != 100 || planIndexed(t, tenant) {
		t.Fatalf("paused plan: gray at %d bp, indexed %v; want the gray kept and the index dropped", grayBP(rel), planIndexed(t, tenant))
	}
	pauses := func() uint64 {
		families, err := a.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		return sample(families, "confetti_proxy_plan_pauses_total", nil)
	}
	if got := pauses(); got != 1 {
		t.Fatalf("confetti_proxy_plan_pauses_total = %d after the pause, want 1", got)
	}
	// Paused, it stays put however long it waits.
	clock.Advance(time.Hour)
	if rel := step(t, a, tenant); rel.GetPlan().GetState() != pb.Plan_PAUSED || grayBP(rel) != 100 {
		t.Fatalf("paused plan moved: %v", rel)
	}
	if got := pauses(); got != 1 {
		t.Fatalf("confetti_proxy_plan_pauses_total = %d while the plan stays paused, want 1", got)
	}
	_, err := a.releases.ResumePlan(testCtx(t), &pb.PlanRequest{Tenant: tenant, Item: "cfg", ExpectedModRevision: &rel.ModRevision})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.releases.ResumePlan(testCtx(t), &pb.PlanRequest{Tenant: tenant, Item: "cfg"})
	wantStatus(t, err, codes.FailedPrecondition, "running, not paused")
	// The fix is out: resumed, the plan bakes again and moves on.
	ro.set(2, 100, 0, 0, "")
	clock.Advance(30 * time.Second)
	if rel := step(t, a, tenant); rel.GetPlan().GetState() != pb.Plan_RUNNING || grayBP(rel) != 100 {
		t.Fatalf("resumed plan before its new bake ended: %v", rel)
	}
	clock.Advance(30 * time.Second)
	if rel := step(t, a, tenant); rel.GetPlan().GetCurrentStep() != 1 || grayBP(rel) != 1000 {
		t.Fatalf("resumed plan after its bake: %v, want step 2 at 1000 bp", rel)
	}
	// Abort removes the gray and ends the plan.
	rel, err = a.releases.AbortPlan(testCtx(t), &pb.PlanRequest{Tenant: tenant, Item: "cfg", Reason: "enough"})
	if err != nil {
		t.Fatal(err)
	}
	if rel.GetPlan().GetState() != pb.Plan_ABORTED || len(rel.GetGrays()) != 0 || rel.GetStable() != 1 || !strings.Contains(rel.GetPlan().GetReason(), "enough") {
		t.Fatalf("aborted: %v", rel)
	}
	if planIndexed(t, tenant) {
		t.Error("aborted plan still indexed")
	}
	_, err = a.releases.AbortPlan(testCtx(t), &pb.PlanRequest{Tenant: tenant, Item: "cfg"})
	wantStatus(t, err, codes.FailedPrecondition, "aborted, not running or paused")
}

func TestPlanValidation(t *testing.T) {
	const tenant = "plan-val"
	a, _, _ := planFixture(t, tenant)
	ctx := testCtx(t)
	tests := []struct {
		name  string
		plan  *pb.Plan
		code  codes.Code
		parts []string
	}{
		{name: "no steps", plan: &pb.Plan{Version: 1}, code: codes.InvalidArgument, parts: []string{"needs steps"}},
		{name: "not ending at everyone", plan: &pb.Plan{Version: 1, Steps: []int32{100, 5000}}, code: codes.InvalidArgument, parts: []string{"ends at 10000"}},
		{name: "missing version", plan: &pb.Plan{Version: 9, Steps: []int32{10000}}, code: codes.NotFound, parts: []string{"no version 9"}},
		{name: "second plan", plan: &pb.Plan{Version: 1, Steps: []int32{10000}}, code: codes.FailedPrecondition, parts: []string{"already has a running plan", "abort-plan"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.releases.StartPlan(ctx, &pb.StartPlanRequest{Tenant: tenant, Item: "cfg", Plan: tt.plan})
			wantStatus(t, err, tt.code, tt.parts...)
		})
	}
	_, err := a.releases.StartGray(ctx, &pb.StartGrayRequest{Tenant: tenant, Item: "cfg", Gray: &pb.Gray{Id: "v2", Version: 2, Rule: pctRule(5000)}})
	wantStatus(t, err, codes.FailedPrecondition, `gray "v2" is driven by the running plan`)
	// Promoting the plan's gray by hand ends the plan.
	rel, err := a.releases.PromoteGray(ctx, &pb.PromoteGrayRequest{Tenant: tenant, Item: "cfg", GrayId: "v2"})
	if err != nil {
		t.Fatal(err)
	}
	if rel.GetStable() != 2 || rel.GetPlan().GetState() != pb.Plan_DONE {
		t.Errorf("promoted plan gray: %v", rel)
	}
}

// TestPlanWaitsForRolloutState checks that a plan does not advance while
// no rollout state can be read.
func TestPlanWaitsForRolloutState(t *testing.T) {
	const tenant = "plan-blind"
	a, clock, ro := planFixture(t, tenant)
	ro.mu.Lock()
	ro.err = fmt.Errorf("%w: test", ErrRolloutUnavailable)
	ro.mu.Unlock()
	clock.Advance(time.Hour)
	if rel := step(t, a, tenant); rel.GetPlan().GetCurrentStep() != 0 || rel.GetPlan().GetState() != pb.Plan_RUNNING {
		t.Fatalf("plan moved without rollout state: %v", rel)
	}
}

// TestPlanControllerRunsByItself runs the controller's own loop with a
// short interval and no bake: the plan reaches 100% unattended.
func TestPlanControllerRunsByItself(t *testing.T) {
	const tenant = "plan-loop"
	c := sharedClusters(t)
	ro := &fakeRollouts{}
	a := newAPI(t, c, Config{Rollouts: ro, PlanInterval: 20 * time.Millisecond})
	a.freshTenant(t, c, tenant)
	a.publish(t, tenant, "cfg", "1")
	a.publish(t, tenant, "cfg", "2")
	if _, err := a.releases.StartPlan(testCtx(t), &pb.StartPlanRequest{Tenant: tenant, Item: "cfg",
		Plan: &pb.Plan{Version: 2, Steps: []int32{5000, 10000}}}); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, "the plan to finish", func() bool {
		rel, err := a.releases.GetRelease(testCtx(t), &pb.GetReleaseRequest{Tenant: tenant, Item: "cfg"})
		return err == nil && rel.GetPlan().GetState() == pb.Plan_DONE && rel.GetStable() == 2
	})
}
