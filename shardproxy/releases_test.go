package shardproxy

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

func pctRule(bp int32) *pb.Rule { return &pb.Rule{Rule: &pb.Rule_BasisPoints{BasisPoints: bp}} }

func selRule(s string) *pb.Rule { return &pb.Rule{Rule: &pb.Rule_Selector{Selector: s}} }

func grayIDs(rel *pb.Release) []string {
	var ids []string
	for _, g := range rel.GetGrays() {
		ids = append(ids, g.GetId())
	}
	slices.Sort(ids)
	return ids
}

// TestConcurrentReleaseEdits has two clients, each through its own proxy,
// edit the same release from the same read in every round: with
// expected_mod_revision exactly one wins, the other gets Aborted naming
// the current revision, and its retry on the new record keeps the
// winner's change. Without expected_mod_revision, no edit is lost.
func TestConcurrentReleaseEdits(t *testing.T) {
	const tenant = "rel-race"
	a, _, _ := releaseAPI(t, tenant)
	b := newAPI(t, sharedClusters(t), Config{PlanInterval: -1, Rollouts: &fakeRollouts{}})
	ctx := testCtx(t)
	a.publish(t, tenant, "cfg", "v1")
	a.publish(t, tenant, "cfg", "v2")
	clients := []pb.ReleasesClient{a.releases, b.releases}
	for round := range 5 {
		rel, err := a.releases.GetRelease(ctx, &pb.GetReleaseRequest{Tenant: tenant, Item: "cfg"})
		if err != nil {
			t.Fatal(err)
		}
		start := rel.GetModRevision()
		results := make([]*pb.Release, 2)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, cl := range clients {
			wg.Go(func() {
				results[i], errs[i] = cl.StartGray(ctx, &pb.StartGrayRequest{Tenant: tenant, Item: "cfg",
					Gray:                &pb.Gray{Id: fmt.Sprintf("r%d-c%d", round, i), Version: 2, Rule: pctRule(100)},
					ExpectedModRevision: proto.Int64(start)})
			})
		}
		wg.Wait()
		var winner, loser int
		switch {
		case errs[0] == nil && errs[1] != nil:
			winner, loser = 0, 1
		case errs[1] == nil && errs[0] != nil:
			winner, loser = 1, 0
		default:
			t.Fatalf("round %d: errors %v and %v, want exactly one to fail", round, errs[0], errs[1])
		}
		won := results[winner].GetModRevision()
		wantStatus(t, errs[loser], codes.Aborted, fmt.Sprintf("mod_revision %d, not the expected %d", won, start))
		// The loser re-reads and retries on top.
		cur, err := clients[loser].GetRelease(ctx, &pb.GetReleaseRequest{Tenant: tenant, Item: "cfg"})
		if err != nil {
			t.Fatal(err)
		}
		if cur.GetModRevision() != won {
			t.Fatalf("round %d: re-read at %d, winner wrote %d", round, cur.GetModRevision(), won)
		}
		retried, err := clients[loser].StartGray(ctx, &pb.StartGrayRequest{Tenant: tenant, Item: "cfg",
			Gray:                &pb.Gray{Id: fmt.Sprintf("r%d-c%d", round, loser), Version: 2, Rule: pctRule(100)},
			ExpectedModRevision: proto.Int64(cur.GetModRevision())})
		if err != nil {
			t.Fatalf("round %d: retry: %v", round, err)
		}
		for i := range 2 {
			if !slices.Contains(grayIDs(retried), fmt.Sprintf("r%d-c%d", round, i)) {
				t.Fatalf("round %d: grays %v lack r%d-c%d", round, grayIDs(retried), round, i)
			}
		}
	}

	// Without expected_mod_revision every concurrent edit lands.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			_, err := clients[i%2].StartGray(ctx, &pb.StartGrayRequest{Tenant: tenant, Item: "cfg",
				Gray: &pb.Gray{Id: fmt.Sprintf("free-%d", i), Version: 1, Rule: pctRule(100)}})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	rel, err := a.releases.GetRelease(ctx, &pb.GetReleaseRequest{Tenant: tenant, Item: "cfg"})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(rel.GetGrays()); got != 18 {
		t.Errorf("%d grays after 10 + 8 edits: %v", got, grayIDs(rel))
	}
	log, err := a.releases.Log(ctx, &pb.ReleaseLogRequest{Tenant: tenant, Item: "cfg"})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(log.GetEntries()); got != 19 {
		t.Errorf("log has %d entries, want 19 (create + 18 grays)", got)
	}
}

func TestSetStableAndRollback(t *testing.T) {
	const tenant = "rel-stable"
	a, _, _ := releaseAPI(t, tenant)
	ctx := testCtx(t)
	for i := 1; i <= 3; i++ {
		a.publish(t, tenant, "cfg", fmt.Sprint(i))
	}
	rel, err := a.releases.SetStable(ctx, &pb.SetStableRequest{Tenant: tenant, Item: "cfg", Version: 3, Reason: "go"})
	if err != nil || rel.GetStable() != 3 {
		t.Fatalf("set stable 3: %v, %v", rel, err)
	}
	rel, err = a.releases.SetStable(ctx, &pb.SetStableRequest{Tenant: tenant, Item: "cfg", Version: 1, Reason: "rollback", ExpectedModRevision: proto.Int64(rel.GetModRevision())})
	if err != nil || rel.GetStable() != 1 {
		t.Fatalf("roll back to 1: %v, %v", rel, err)
	}
	_, err = a.releases.SetStable(ctx, &pb.SetStableRequest{Tenant: tenant, Item: "cfg", Version: 9})
	wantStatus(t, err, codes.NotFound, "no version 9", "1 to 3")
	_, err = a.releases.SetStable(ctx, &pb.SetStableRequest{Tenant: tenant, Item: "cfg", Version: 0})
	wantStatus(t, err, codes.InvalidArgument, "at least 1")
	_, err = a.releases.SetStable(ctx, &pb.SetStableRequest{Tenant: tenant, Item: "nope", Version: 1})
	wantStatus(t, err, codes.NotFound, `no item "nope"`)
	got, err := a.releases.GetRelease(ctx, &pb.GetReleaseRequest{Tenant: tenant, Item: "cfg"})
	if err != nil || got.GetStable() != 1 || got.GetModRevision() != rel.GetModRevision() {
		t.Errorf("release = %v, %v; want stable 1 at %d", got, err, rel.GetModRevision())
	}
}

func TestGrayLifecycle(t *testing.T) {
	const tenant = "rel-gray"
	a, _, _ := releaseAPI(t, tenant)
	ctx := testCtx(t)
	for i := 1; i <= 3; i++ {
		a.publish(t, tenant, "cfg", fmt.Sprint(i))
	}
	if _, err := a.releases.StartGray(ctx, &pb.StartGrayRequest{Tenant: tenant, Item: "cfg", Gray: &pb.Gray{Version: 2, Rule: pctRule(1000)}}); err != nil {
		t.Fatal(err)
	}
	rel, err := a.releases.StartGray(ctx, &pb.StartGrayRequest{Tenant: tenant, Item: "cfg", Gray: &pb.Gray{Version: 2, Rule: selRule("zone in (a,b)"), Priority: 5}})
	if err != nil {
		t.Fatal(err)
	}
	if got := grayIDs(rel); !cmp.Equal(got, []string{"v2", "v2-2"}) {
		t.Fatalf("generated ids %v, want v2 and v2-2", got)
	}
	// Same id replaces.
	rel, err = a.releases.StartGray(ctx, &pb.StartGrayRequest{Tenant: tenant, Item: "cfg", Gray: &pb.Gray{Id: "v2", Version: 3, Rule: pctRule(5000)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rel.GetGrays()) != 2 || rel.GetGrays()[0].GetVersion() != 3 {
		t.Fatalf("replaced gray: %v", rel.GetGrays())
	}
	rel, err = a.releases.PromoteGray(ctx, &pb.PromoteGrayRequest{Tenant: tenant, Item: "cfg", GrayId: "v2"})
	if err != nil || rel.GetStable() != 3 || !cmp.Equal(grayIDs(rel), []string{"v2-2"}) {
		t.Fatalf("promote: %v, %v; want stable 3 and gray v2-2 left", rel, err)
	}
	rel, err = a.releases.AbortGray(ctx, &pb.AbortGrayRequest{Tenant: tenant, Item: "cfg", GrayId: "v2-2"})
	if err != nil || rel.GetStable() != 3 || len(rel.GetGrays()) != 0 {
		t.Fatalf("abort: %v, %v", rel, err)
	}
	_, err = a.releases.PromoteGray(ctx, &pb.PromoteGrayRequest{Tenant: tenant, Item: "cfg", GrayId: "v2"})
	wantStatus(t, err, codes.NotFound, `no gray "v2"`, "no grays")
}

func TestStartGrayValidation(t *testing.T) {
	const tenant = "rel-grayval"
	a, _, _ := releaseAPI(t, tenant)
	a.publish(t, tenant, "cfg", "1")
	tests := []struct {
		name  string
		gray  *pb.Gray
		code  codes.Code
		parts []string
	}{
		{name: "no gray", code: codes.InvalidArgument, parts: []string{"needs a gray"}},
		{name: "no rule", gray: &pb.Gray{Version: 1}, code: codes.InvalidArgument, parts: []string{"needs a rule"}},
		{name: "zero percent", gray: &pb.Gray{Version: 1, Rule: pctRule(0)}, code: codes.InvalidArgument, parts: []string{"outside 1..10000"}},
		{name: "over everyone", gray: &pb.Gray{Version: 1, Rule: pctRule(10001)}, code: codes.InvalidArgument, parts: []string{"outside 1..10000"}},
		{name: "bad selector", gray: &pb.Gray{Version: 1, Rule: selRule("zone in (a")}, code: codes.InvalidArgument, parts: []string{"position 11", `expected "," or ")"`}},
		{name: "no instances", gray: &pb.Gray{Version: 1, Rule: &pb.Rule{Rule: &pb.Rule_Instances{Instances: &pb.InstanceList{}}}}, code: codes.InvalidArgument, parts: []string{"lists no instances"}},
		{name: "bad id", gray: &pb.Gray{Id: "a/b", Version: 1, Rule: pctRule(1)}, code: codes.InvalidArgument, parts: []string{`gray id "a/b"`}},
		{name: "no version", gray: &pb.Gray{Rule: pctRule(1)}, code: codes.InvalidArgument, parts: []string{"at least 1"}},
		{name: "missing version", gray: &pb.Gray{Version: 4, Rule: pctRule(1)}, code: codes.NotFound, parts: []string{"no version 4", "1 to 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.releases.StartGray(testCtx(t), &pb.StartGrayRequest{Tenant: tenant, Item: "cfg", Gray: tt.gray})
			wantStatus(t, err, tt.code, tt.parts...)
		})
	}
	rel, err := a.releases.GetRelease(testCtx(t), &pb.GetReleaseRequest{Tenant: tenant, Item: "cfg"})
	if err != nil || len(rel.GetGrays()) != 0 {
		t.Errorf("refused grays left %v, %v", rel.GetGrays(), err)
	}
}

func TestReleaseLogRecordsAuthorAndReason(t *testing.T) {
	const tenant = "rel-log"
	a, clock, _ := releaseAPI(t, tenant)
	ctx := testCtx(t)
	v1, err := a.releases.Publish(by(ctx, "alice"), &pb.PublishRequest{Tenant: tenant, Item: "cfg", Content: []byte("1")})
	if err != nil || v1.GetAuthor() != "alice" {
		t.Fatalf("publish: %v, %v; want author alice", v1, err)
	}
	a.publish(t, tenant, "cfg", "2")
	clock.Advance(time.Minute)
	rel, err := a.releases.StartGray(by(ctx, "bob"), &pb.StartGrayRequest{Tenant: tenant, Item: "cfg", Reason: "canary",
		Gray: &pb.Gray{Id: "c", Version: 2, Rule: pctRule(100)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.releases.AbortGray(ctx, &pb.AbortGrayRequest{Tenant: tenant, Item: "cfg", GrayId: "c", Reason: "oops"}); err != nil {
		t.Fatal(err)
	}
	log, err := a.releases.Log(ctx, &pb.ReleaseLogRequest{Tenant: tenant, Item: "cfg"})
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ author, action, reason string }
	var got []row
	for _, e := range log.GetEntries() {
		got = append(got, row{e.GetAuthor(), e.GetAction(), e.GetReason()})
	}
	want := []row{{"alice", "create", "first version published"}, {"bob", "start-gray", "canary"}, {anonymous, "abort-gray", "oops"}}
	if !cmp.Equal(got, want, cmp.AllowUnexported(row{})) {
		t.Fatalf("log = %+v, want %+v", got, want)
	}
	e := log.GetEntries()[1]
	if e.GetTime() != clock.Now().Unix() || e.GetAfter().GetModRevision() != rel.GetModRevision() || !cmp.Equal(grayIDs(e.GetAfter()), []string{"c"}) {
		t.Errorf("start-gray entry = %v; want time %d and the release after it at %d", e, clock.Now().Unix(), rel.GetModRevision())
	}
}

// TestReleaseConflictIsHTTP409 checks the HTTP status of a stale edit.
func TestReleaseConflictIsHTTP409(t *testing.T) {
	const tenant = "rel-http"
	a, _, _ := releaseAPI(t, tenant)
	v := a.publish(t, tenant, "cfg", "1")
	a.publish(t, tenant, "cfg", "2")
	h := newHTTPAPI(t, a)
	path := "/v1/tenants/" + tenant + "/items/cfg/release/stable"
	h.do(t, http.MethodPut, path, []byte(`{"version":"2","expected_mod_revision":"`+fmt.Sprint(v.GetModRevision())+`"}`)).wantStatus(t, http.StatusOK)
	h.do(t, http.MethodPut, path, []byte(`{"version":"1","expected_mod_revision":"`+fmt.Sprint(v.GetModRevision())+`"}`)).
		wantError(t, http.StatusConflict, "Aborted", "not the expected")
	r := h.do(t, http.MethodGet, "/v1/tenants/"+tenant+"/items/cfg/release", nil).wantStatus(t, http.StatusOK)
	if !strings.Contains(string(r.body), `"stable":"2"`) {
		t.Errorf("release over HTTP: %s", r.body)
	}
}
