package shardproxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/release"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// authorHeader is the metadata key the test interceptor turns into the
// caller's API key name.
const authorHeader = "test-author"

// asAuthor is a server option that makes the caller the holder of a
// writer key named by the test-author metadata, standing in for the auth
// interceptor.
func asAuthor() grpc.ServerOption {
	return grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		if v := md.Get(authorHeader); len(v) > 0 {
			ctx = auth.NewContext(ctx, auth.Principal{KeyID: "k-" + v[0], Name: v[0], Role: meta.RoleWriter})
		}
		return h(ctx, req)
	})
}

// by returns a context whose requests are made by author.
func by(ctx context.Context, author string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, authorHeader, author)
}

// releaseAPI is a proxy for release tests on the shared clusters, with a
// fake clock, a fake rollout reader and no plan controller of its own
// (tests run its passes), and a fresh tenant.
func releaseAPI(t *testing.T, tenant string) (*api, *fakeClock, *fakeRollouts) {
	t.Helper()
	c := sharedClusters(t)
	clock := newFakeClock()
	ro := &fakeRollouts{}
	a := newAPI(t, c, Config{Now: clock.Now, Rollouts: ro, PlanInterval: -1}, asAuthor())
	a.freshTenant(t, c, tenant)
	return a, clock, ro
}

// publish publishes content as the next version of item and returns it.
func (a *api) publish(t *testing.T, tenant, item, content string) *pb.ItemVersion {
	t.Helper()
	iv, err := a.releases.Publish(testCtx(t), &pb.PublishRequest{Tenant: tenant, Item: item, Content: []byte(content)})
	if err != nil {
		t.Fatalf("publish %s: %v", item, err)
	}
	return iv
}

// shardOf returns the shard a tenant of the shared clusters is placed on.
func shardOf(t *testing.T, tenant string) string {
	t.Helper()
	tn, ok := sharedClusters(t).store.Tenant(tenant)
	if !ok {
		t.Fatalf("tenant %s not placed", tenant)
	}
	return tn.Shard
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestPublishHistoryShowDiff(t *testing.T) {
	const tenant = "rel-items"
	a, clock, _ := releaseAPI(t, tenant)
	ctx := by(testCtx(t), "alice")
	v1, err := a.releases.Publish(ctx, &pb.PublishRequest{Tenant: tenant, Item: "routes", Content: []byte("a: 1\nb: 2\n"), Message: "first"})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	v2, err := a.releases.Publish(ctx, &pb.PublishRequest{Tenant: tenant, Item: "routes", Content: []byte("a: 1\nb: 3\n"), Message: "bump b"})
	if err != nil {
		t.Fatal(err)
	}
	want := &pb.ItemVersion{Tenant: tenant, Item: "routes", Version: 2, Content: []byte("a: 1\nb: 3\n"), Author: "alice",
		Message: "bump b", ContentHash: sha("a: 1\nb: 3\n"), CreateTime: clock.Now().Unix(), ModRevision: v2.GetModRevision()}
	if diff := cmp.Diff(want, v2, protocmp.Transform()); diff != "" {
		t.Errorf("publish v2 (-want +got):\n%s", diff)
	}
	if v1.GetVersion() != 1 || v2.GetModRevision() <= v1.GetModRevision() {
		t.Errorf("versions %d then %d at revisions %d, %d", v1.GetVersion(), v2.GetVersion(), v1.GetModRevision(), v2.GetModRevision())
	}

	// show: the latest, and one version.
	latest, err := a.releases.GetVersion(ctx, &pb.GetVersionRequest{Tenant: tenant, Item: "routes"})
	if err != nil || latest.GetVersion() != 2 {
		t.Fatalf("latest = %v, %v; want version 2", latest, err)
	}
	got1, err := a.releases.GetVersion(ctx, &pb.GetVersionRequest{Tenant: tenant, Item: "routes", Version: 1})
	if err != nil || string(got1.GetContent()) != "a: 1\nb: 2\n" || got1.GetMessage() != "first" {
		t.Fatalf("version 1 = %v, %v", got1, err)
	}
	_, err = a.releases.GetVersion(ctx, &pb.GetVersionRequest{Tenant: tenant, Item: "routes", Version: 7})
	wantStatus(t, err, codes.NotFound, "no version 7", "1 to 2")
	_, err = a.releases.GetVersion(ctx, &pb.GetVersionRequest{Tenant: tenant, Item: "nothing"})
	wantStatus(t, err, codes.NotFound, `no item "nothing"`, "confetti item publish")

	// diff: what `confetti item diff routes 1 2` prints.
	if d := release.UnifiedDiff(string(got1.GetContent()), string(latest.GetContent()), "routes v1", "routes v2"); d != "--- routes v1\n+++ routes v2\n@@ -1,2 +1,2 @@\n a: 1\n-b: 2\n+b: 3\n" {
		t.Errorf("diff:\n%s", d)
	}

	// history: newest first, without content, paged.
	for i := 3; i <= 5; i++ {
		a.publish(t, tenant, "routes", fmt.Sprintf("a: %d\n", i))
	}
	h, err := a.releases.History(ctx, &pb.HistoryRequest{Tenant: tenant, Item: "routes"})
	if err != nil {
		t.Fatal(err)
	}
	if got := versionsOf(h.GetVersions()); !cmp.Equal(got, []int64{5, 4, 3, 2, 1}) || h.GetNextPageToken() != "" {
		t.Fatalf("history = %v, next %q; want 5..1 and no next page", got, h.GetNextPageToken())
	}
	for _, v := range h.GetVersions() {
		if len(v.GetContent()) != 0 || v.GetContentHash() == "" || v.GetModRevision() == 0 {
			t.Errorf("history entry %d: content %q, hash %q, revision %d", v.GetVersion(), v.GetContent(), v.GetContentHash(), v.GetModRevision())
		}
	}
	var paged []int64
	tok := ""
	for {
		h, err := a.releases.History(ctx, &pb.HistoryRequest{Tenant: tenant, Item: "routes", PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, versionsOf(h.GetVersions())...)
		if tok = h.GetNextPageToken(); tok == "" {
			break
		}
	}
	if !cmp.Equal(paged, []int64{5, 4, 3, 2, 1}) {
		t.Errorf("paged history = %v", paged)
	}
	_, err = a.releases.History(ctx, &pb.HistoryRequest{Tenant: tenant, Item: "routes", PageToken: "x"})
	wantStatus(t, err, codes.InvalidArgument, "page_token")

	// The first publish created the release at version 1; later ones
	// did not move it.
	rel, err := a.releases.GetRelease(ctx, &pb.GetReleaseRequest{Tenant: tenant, Item: "routes"})
	if err != nil {
		t.Fatal(err)
	}
	if rel.GetStable() != 1 || len(rel.GetGrays()) != 0 || rel.GetModRevision() != v1.GetModRevision() {
		t.Errorf("release = %v, want stable 1 written with version 1 at revision %d", rel, v1.GetModRevision())
	}

	// The version body is stored as an ItemVersion proto at its key.
	raw := sharedClusters(t).rawTenantKeys(t, shardOf(t, tenant), tenant)
	if _, ok := raw[keys.ItemVersion(tenant, "routes", 5)]; !ok {
		t.Errorf("no key %s among %d keys", keys.ItemVersion(tenant, "routes", 5), len(raw))
	}
}

func versionsOf(vs []*pb.ItemVersion) []int64 {
	out := make([]int64, 0, len(vs))
	for _, v := range vs {
		out = append(out, v.GetVersion())
	}
	return out
}

func TestPublishIdenticalContentRefused(t *testing.T) {
	const tenant = "rel-same"
	a, _, _ := releaseAPI(t, tenant)
	ctx := testCtx(t)
	a.publish(t, tenant, "cfg", "x")
	_, err := a.releases.Publish(ctx, &pb.PublishRequest{Tenant: tenant, Item: "cfg", Content: []byte("x")})
	wantStatus(t, err, codes.FailedPrecondition, "identical to version 1")
	a.publish(t, tenant, "cfg", "y")
	// Going back to an older content is a new version.
	if v := a.publish(t, tenant, "cfg", "x"); v.GetVersion() != 3 {
		t.Errorf("republished old content as version %d, want 3", v.GetVersion())
	}
}

func TestPublishChecksNamesAndSizes(t *testing.T) {
	const tenant = "rel-names"
	a, _, _ := releaseAPI(t, tenant)
	ctx := testCtx(t)
	_, err := a.releases.Publish(ctx, &pb.PublishRequest{Tenant: tenant, Item: "a/b", Content: []byte("x")})
	wantStatus(t, err, codes.InvalidArgument, `item "a/b"`)
	_, err = a.releases.Publish(ctx, &pb.PublishRequest{Tenant: "Bad", Item: "a", Content: []byte("x")})
	wantStatus(t, err, codes.InvalidArgument, "tenant")
	_, err = a.releases.Publish(ctx, &pb.PublishRequest{Tenant: tenant, Item: "a", Content: make([]byte, DefaultConfig().MaxValueBytes+1)})
	wantStatus(t, err, codes.InvalidArgument, "content is", "limit")
}

func TestPublishRefusedByFence(t *testing.T) {
	const tenant = "rel-fenced"
	a, _, _ := releaseAPI(t, tenant)
	c := sharedClusters(t)
	a.publish(t, tenant, "cfg", "x")
	shard := shardOf(t, tenant)
	if _, err := c.raw[shard].Put(testCtx(t), keys.Fence(tenant), "moving"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.raw[shard].Delete(context.Background(), keys.Fence(tenant)) })
	_, err := a.releases.Publish(testCtx(t), &pb.PublishRequest{Tenant: tenant, Item: "cfg", Content: []byte("y")})
	wantStatus(t, err, codes.Unavailable, "fenced")
	_, err = a.releases.SetStable(testCtx(t), &pb.SetStableRequest{Tenant: tenant, Item: "cfg", Version: 1})
	wantStatus(t, err, codes.Unavailable, "fenced")
}

func TestPublishSchema(t *testing.T) {
	const tenant = "rel-schema"
	a, _, _ := releaseAPI(t, tenant)
	ctx := testCtx(t)
	schema := `{"type":"object","required":["routes"],"properties":{"routes":{"type":"array"}}}`
	if _, err := a.releases.SetSchema(ctx, &pb.SetSchemaRequest{Tenant: tenant, Item: "gw", Schema: []byte(schema)}); err != nil {
		t.Fatal(err)
	}
	_, err := a.releases.Publish(ctx, &pb.PublishRequest{Tenant: tenant, Item: "gw", Content: []byte(`{"other":1}`)})
	wantStatus(t, err, codes.InvalidArgument, "schema violation", "routes")
	_, err = a.releases.Publish(ctx, &pb.PublishRequest{Tenant: tenant, Item: "gw", Content: []byte(`{"routes":"no"}`)})
	wantStatus(t, err, codes.InvalidArgument, "schema violation", "array")
	_, err = a.releases.Publish(ctx, &pb.PublishRequest{Tenant: tenant, Item: "gw", Content: []byte(`routes: []`)})
	wantStatus(t, err, codes.InvalidArgument, "not JSON")
	if v := a.publish(t, tenant, "gw", `{"routes":[]}`); v.GetVersion() != 1 {
		t.Errorf("valid content published as version %d", v.GetVersion())
	}

	_, err = a.releases.SetSchema(ctx, &pb.SetSchemaRequest{Tenant: tenant, Item: "gw", Schema: []byte(`{"type":"nope"}`)})
	wantStatus(t, err, codes.InvalidArgument, "does not compile")
	_, err = a.releases.SetSchema(ctx, &pb.SetSchemaRequest{Tenant: tenant, Item: "gw", Schema: []byte(`{"$ref":"file:///etc/passwd"}`)})
	wantStatus(t, err, codes.InvalidArgument, "only references inside the schema")
	_, err = a.releases.SetSchema(ctx, &pb.SetSchemaRequest{Tenant: tenant, Item: "gw", Schema: []byte(`{"$ref":"other.json"}`)})
	wantStatus(t, err, codes.InvalidArgument, "only references inside the schema")

	// Clearing the schema lets any content through.
	if _, err := a.releases.SetSchema(ctx, &pb.SetSchemaRequest{Tenant: tenant, Item: "gw"}); err != nil {
		t.Fatal(err)
	}
	a.publish(t, tenant, "gw", "not json at all")
}

func TestListItems(t *testing.T) {
	const tenant = "rel-list"
	a, _, _ := releaseAPI(t, tenant)
	for i := range 3 {
		a.publish(t, tenant, "b-many", fmt.Sprint(i))
	}
	a.publish(t, tenant, "a", "x")
	a.publish(t, tenant, "c.json", "x")
	if _, err := a.releases.SetSchema(testCtx(t), &pb.SetSchemaRequest{Tenant: tenant, Item: "d-schema-only", Schema: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	got, err := a.releases.ListItems(testCtx(t), &pb.ListItemsRequest{Tenant: tenant})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b-many", "c.json", "d-schema-only"}; !cmp.Equal(got.GetItems(), want) {
		t.Errorf("items = %q, want %q", got.GetItems(), want)
	}
}

// TestHistorySurvivesCompactionAndDefragmentation compacts the shard past
// every write and defragments it: history is the version keys themselves,
// so it reads the same.
func TestHistorySurvivesCompactionAndDefragmentation(t *testing.T) {
	c := newClusters(t, "compact")
	ctx := testCtx(t)
	if _, err := c.store.AddShard(ctx, meta.Shard{ID: "compact", Endpoints: c.shards["compact"].Endpoints()}); err != nil {
		t.Fatal(err)
	}
	a := newAPI(t, c, Config{PlanInterval: -1, Rollouts: &fakeRollouts{}})
	a.createTenant(t, "hist")
	for i := 1; i <= 4; i++ {
		a.publish(t, "hist", "cfg", fmt.Sprintf("content %d", i))
		if _, err := a.releases.SetStable(ctx, &pb.SetStableRequest{Tenant: "hist", Item: "cfg", Version: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := a.releases.History(ctx, &pb.HistoryRequest{Tenant: "hist", Item: "cfg"})
	if err != nil {
		t.Fatal(err)
	}
	raw := c.raw["compact"]
	cur, err := raw.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Compact(ctx, cur.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Defragment(ctx, c.shards["compact"].Endpoints()[0]); err != nil {
		t.Fatal(err)
	}
	// The old revisions are gone...
	_, err = raw.Get(ctx, keys.ItemRelease("hist", "cfg"), clientv3.WithRev(cur.Header.Revision-1))
	if err == nil || !strings.Contains(err.Error(), "compacted") {
		t.Fatalf("read below the compaction: %v, want compacted", err)
	}
	// ...and history reads the same, content included.
	after, err := a.releases.History(ctx, &pb.HistoryRequest{Tenant: "hist", Item: "cfg"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after, protocmp.Transform()); diff != "" {
		t.Errorf("history changed by compaction (-before +after):\n%s", diff)
	}
	if got := versionsOf(after.GetVersions()); !cmp.Equal(got, []int64{4, 3, 2, 1}) {
		t.Errorf("history = %v", got)
	}
	for i := int64(1); i <= 4; i++ {
		v, err := a.releases.GetVersion(ctx, &pb.GetVersionRequest{Tenant: "hist", Item: "cfg", Version: i})
		if err != nil || string(v.GetContent()) != fmt.Sprintf("content %d", i) {
			t.Errorf("version %d after compaction = %q, %v", i, v.GetContent(), err)
		}
	}
	log, err := a.releases.Log(ctx, &pb.ReleaseLogRequest{Tenant: "hist", Item: "cfg"})
	if err != nil || len(log.GetEntries()) != 5 {
		t.Errorf("log after compaction: %d entries, %v; want 5", len(log.GetEntries()), err)
	}
}
