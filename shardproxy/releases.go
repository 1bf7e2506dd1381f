package shardproxy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/release"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

var (
	// ErrReleaseConflict is returned for an edit whose
	// expected_mod_revision is not the release record's current one; the
	// message carries the current revision.
	ErrReleaseConflict = rpcerr.New(codes.Aborted, "shardproxy: release changed concurrently")
	// ErrGrayNotFound is returned for a gray id the release does not
	// hold.
	ErrGrayNotFound = rpcerr.New(codes.NotFound, "shardproxy: gray not found")
	// ErrPlanState is returned for a plan edit the plan's state does not
	// allow: resuming a plan that is not paused, starting a second plan,
	// replacing the gray a plan drives.
	ErrPlanState = rpcerr.New(codes.FailedPrecondition, "shardproxy: plan state")
)

const (
	// maxGrays caps the grays of one release.
	maxGrays = 64
	// maxLogEntries caps the entries one Log reply holds: the newest.
	maxLogEntries = 1000
	// anonymous is the author of changes made without an API key (a proxy
	// run without auth).
	anonymous = "anonymous"
)

// releaseService serves the Releases service: items and their versions
// (items.go), release records and their log (releases.go), staged plans
// (plan.go) and rollout status (rollout.go).
type releaseService struct {
	pb.UnimplementedReleasesServer
	p *Proxy
}

var _ pb.ReleasesServer = (*releaseService)(nil)

// GetRelease returns an item's release record.
func (s *releaseService) GetRelease(ctx context.Context, req *pb.GetReleaseRequest) (*pb.Release, error) {
	return serve(ctx, s.p, pb.Releases_GetRelease_FullMethodName, req, s.p.getRelease)
}

// SetStable points the release at any published version.
func (s *releaseService) SetStable(ctx context.Context, req *pb.SetStableRequest) (*pb.Release, error) {
	return serve(ctx, s.p, pb.Releases_SetStable_FullMethodName, req, s.p.setStable)
}

// StartGray adds or replaces a gray.
func (s *releaseService) StartGray(ctx context.Context, req *pb.StartGrayRequest) (*pb.Release, error) {
	return serve(ctx, s.p, pb.Releases_StartGray_FullMethodName, req, s.p.startGray)
}

// PromoteGray makes a gray's version stable and removes the gray.
func (s *releaseService) PromoteGray(ctx context.Context, req *pb.PromoteGrayRequest) (*pb.Release, error) {
	return serve(ctx, s.p, pb.Releases_PromoteGray_FullMethodName, req, s.p.promoteGray)
}

// AbortGray removes a gray.
func (s *releaseService) AbortGray(ctx context.Context, req *pb.AbortGrayRequest) (*pb.Release, error) {
	return serve(ctx, s.p, pb.Releases_AbortGray_FullMethodName, req, s.p.abortGray)
}

// Log lists an item's release changes, oldest first.
func (s *releaseService) Log(ctx context.Context, req *pb.ReleaseLogRequest) (*pb.ReleaseLogResponse, error) {
	return serve(ctx, s.p, pb.Releases_Log_FullMethodName, req, s.p.releaseLog)
}

// authorOf names the caller in versions and the release log: its API
// key's name, else the key's id.
func authorOf(ctx context.Context) string {
	pr, ok := auth.FromContext(ctx)
	switch {
	case !ok:
		return anonymous
	case pr.Name != "":
		return pr.Name
	case pr.KeyID != "":
		return pr.KeyID
	}
	return anonymous
}

// releaseState is an item's release record as read, with the number of
// its last log entry.
type releaseState struct {
	// rel is nil when the item has no release record.
	rel     *pb.Release
	modRev  int64
	lastLog int64
}

// readRelease reads the release record and the last log number of an
// item at one revision.
func (p *Proxy) readRelease(ctx context.Context, r route, item string) (releaseState, error) {
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	resp, err := r.cli.Txn(ectx).Then(
		clientv3.OpGet(keys.ItemRelease(r.tenant.Name, item)),
		clientv3.OpGet(keys.ItemLogs(r.tenant.Name, item), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return releaseState{}, shardError(ctx, r.tenant.Shard, err)
	}
	st := releaseState{lastLog: lastLogNumber(resp.Responses[1].GetResponseRange().GetKvs())}
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		st.rel = &pb.Release{}
		if err := proto.Unmarshal(kvs[0].Value, st.rel); err != nil {
			return releaseState{}, corrupt(r, kvs[0].Key, err)
		}
		st.modRev = kvs[0].ModRevision
		st.rel.ModRevision = st.modRev
	}
	return st, nil
}

// lastLogNumber is the number of the log entry in kvs, 0 without one.
func lastLogNumber(kvs []*mvccpb.KeyValue) int64 {
	if len(kvs) == 0 {
		return 0
	}
	_, rel, _ := keys.Split(string(kvs[0].Key))
	_, kind, n, _ := keys.ParseCfg(rel)
	if kind != keys.CfgLog {
		return 0
	}
	return n
}

// logEntry is who changed a release, how and why.
type logEntry struct {
	author, action, reason string
}

// releaseOps returns the compares and ops that replace the release record
// of mod revision modRev (0: absent), whose previous content was prev
// (nil: none), by rel, and append log entry logN: the record must still be
// at modRev and the log entry must not exist. The plan index follows the
// record: present while its plan runs.
func (p *Proxy) releaseOps(r route, item string, modRev int64, prev, rel *pb.Release, logN int64, e logEntry) ([]clientv3.Cmp, []clientv3.Op, error) {
	tenant := r.tenant.Name
	rel = proto.CloneOf(rel)
	rel.Tenant, rel.Item, rel.ModRevision = tenant, item, 0
	b := mustMarshal(rel)
	if len(b) > p.cfg.MaxValueBytes {
		return nil, nil, fmt.Errorf("%w: the release record of item %q would be %d bytes, the limit is %d; use fewer or shorter instance lists", ErrValueTooLarge, item, len(b), p.cfg.MaxValueBytes)
	}
	relKey, logKey := keys.ItemRelease(tenant, item), keys.ItemLog(tenant, item, logN)
	entry := &pb.ReleaseLogEntry{Time: p.now().Unix(), Author: e.author, Action: e.action, Reason: e.reason, After: rel}
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(relKey), "=", modRev),
		clientv3.Compare(clientv3.CreateRevision(logKey), "=", 0),
	}
	ops := []clientv3.Op{
		clientv3.OpPut(relKey, string(b)),
		clientv3.OpPut(logKey, string(mustMarshal(entry))),
	}
	switch {
	case planRunning(rel):
		ops = append(ops, clientv3.OpPut(keys.Plan(tenant, item), ""))
	case planRunning(prev):
		ops = append(ops, clientv3.OpDelete(keys.Plan(tenant, item)))
	}
	return cmps, ops, nil
}

func planRunning(rel *pb.Release) bool {
	return rel.GetPlan().GetState() == pb.Plan_RUNNING
}

// planActive reports whether rel has a plan that still drives its gray.
func planActive(rel *pb.Release) bool {
	s := rel.GetPlan().GetState()
	return s == pb.Plan_RUNNING || s == pb.Plan_PAUSED
}

// releaseEdit is one change of a release record.
type releaseEdit struct {
	tenant, item string
	// version, when set, is a version the edit points the release at,
	// which must exist.
	version int64
	// expected, when set, is the mod revision the record must be at.
	expected *int64
	action   string
	reason   string
	// apply changes rel, a copy of the current record, or refuses.
	apply func(rel *pb.Release) error
}

// editRelease applies e in one transaction that compares the record's mod
// revision. With an expected revision, a stale one fails with
// ErrReleaseConflict; without, the edit is re-applied on the newer record
// until it lands, so no concurrent edit is lost. The caller is the
// change's author in the log.
func (p *Proxy) editRelease(ctx context.Context, e releaseEdit) (*pb.Release, error) {
	if err := checkMessage("reason", e.reason); err != nil {
		return nil, err
	}
	if e.expected != nil && *e.expected < 1 {
		return nil, fmt.Errorf("%w: expected_mod_revision %d must be at least 1 (read it from the release)", ErrInvalidRequest, *e.expected)
	}
	r, err := p.itemRoute(ctx, e.tenant, e.item)
	if err != nil {
		return nil, err
	}
	if e.version != 0 {
		if err := p.checkVersion(ctx, r, e.item, e.version); err != nil {
			return nil, err
		}
	}
	return p.applyEdit(ctx, r, e, logEntry{author: authorOf(ctx), action: e.action, reason: e.reason})
}

// applyEdit is editRelease on a checked request, with its log entry.
func (p *Proxy) applyEdit(ctx context.Context, r route, e releaseEdit, entry logEntry) (*pb.Release, error) {
	for range maxEditAttempts {
		st, err := p.readRelease(ctx, r, e.item)
		if err != nil {
			return nil, err
		}
		if st.rel == nil {
			return nil, errNoItem(r, e.item)
		}
		if e.expected != nil && *e.expected != st.modRev {
			return nil, releaseConflict(r.tenant.Name, e.item, st.modRev, *e.expected)
		}
		rel := proto.CloneOf(st.rel)
		if err := e.apply(rel); err != nil {
			return nil, err
		}
		cmps, ops, err := p.releaseOps(r, e.item, st.modRev, st.rel, rel, st.lastLog+1, entry)
		if err != nil {
			return nil, err
		}
		relKey := keys.ItemRelease(r.tenant.Name, e.item)
		resp, cur, err := p.cfgWrite(ctx, r, cmps, ops, relKey)
		if err != nil {
			return nil, err
		}
		if resp != nil {
			rel.Tenant, rel.Item, rel.ModRevision = r.tenant.Name, e.item, resp.Header.Revision
			return rel, nil
		}
		if e.expected != nil && cur != *e.expected {
			return nil, releaseConflict(r.tenant.Name, e.item, cur, *e.expected)
		}
	}
	return nil, fmt.Errorf("%w: the release of item %q changed %d times while this edit was applied; retry", ErrContention, e.item, maxEditAttempts)
}

func releaseConflict(tenant, item string, current, expected int64) error {
	return fmt.Errorf("%w: the release of item %q is at mod_revision %d, not the expected %d; someone else changed it: read it again (`confetti release get --tenant %s %s`) and retry", ErrReleaseConflict, item, current, expected, tenant, item)
}

func (p *Proxy) getRelease(ctx context.Context, req *pb.GetReleaseRequest) (*pb.Release, error) {
	r, err := p.itemRoute(ctx, req.GetTenant(), req.GetItem())
	if err != nil {
		return nil, err
	}
	st, err := p.readRelease(ctx, r, req.GetItem())
	if err != nil {
		return nil, err
	}
	if st.rel == nil {
		return nil, errNoItem(r, req.GetItem())
	}
	return st.rel, nil
}

func (p *Proxy) setStable(ctx context.Context, req *pb.SetStableRequest) (*pb.Release, error) {
	if req.GetVersion() < 1 {
		return nil, fmt.Errorf("%w: version %d must be at least 1", ErrInvalidRequest, req.GetVersion())
	}
	return p.editRelease(ctx, releaseEdit{
		tenant: req.GetTenant(), item: req.GetItem(), version: req.GetVersion(), expected: req.ExpectedModRevision,
		action: "set-stable", reason: req.GetReason(),
		apply: func(rel *pb.Release) error {
			rel.Stable = req.GetVersion()
			return nil
		},
	})
}

func (p *Proxy) startGray(ctx context.Context, req *pb.StartGrayRequest) (*pb.Release, error) {
	g := req.GetGray()
	if g == nil {
		return nil, fmt.Errorf("%w: StartGray needs a gray: version, rule and optionally id and priority", ErrInvalidRequest)
	}
	if g.GetId() != "" {
		if err := release.ValidGrayID(g.GetId()); err != nil {
			return nil, err
		}
	}
	if err := release.CheckRule(g.GetRule()); err != nil {
		return nil, err
	}
	if g.GetVersion() < 1 {
		return nil, fmt.Errorf("%w: the gray's version %d must be at least 1", ErrInvalidRequest, g.GetVersion())
	}
	return p.editRelease(ctx, releaseEdit{
		tenant: req.GetTenant(), item: req.GetItem(), version: g.GetVersion(), expected: req.ExpectedModRevision,
		action: "start-gray", reason: req.GetReason(),
		apply: func(rel *pb.Release) error {
			g := proto.CloneOf(g)
			if g.Id == "" {
				g.Id = newGrayID(rel, g.GetVersion())
			}
			if planActive(rel) && rel.GetPlan().GetGrayId() == g.GetId() {
				return fmt.Errorf("%w: gray %q is driven by the %s plan of item %q; abort the plan first (`confetti release abort-plan --tenant %s %s`) or use another gray id", ErrPlanState, g.GetId(), planStateName(rel), req.GetItem(), req.GetTenant(), req.GetItem())
			}
			return putGray(rel, g)
		},
	})
}

// putGray replaces the gray of g's id in rel, or adds g.
func putGray(rel *pb.Release, g *pb.Gray) error {
	if i := grayIndex(rel, g.GetId()); i >= 0 {
		rel.Grays[i] = g
		return nil
	}
	if len(rel.Grays) >= maxGrays {
		return fmt.Errorf("%w: item %q already has %d grays, the limit; promote or abort some first", ErrInvalidRequest, rel.GetItem(), maxGrays)
	}
	rel.Grays = append(rel.Grays, g)
	return nil
}

// newGrayID returns an id for a new gray of version: v<version>, or
// v<version>-<n> when that is taken.
func newGrayID(rel *pb.Release, version int64) string {
	id := fmt.Sprintf("v%d", version)
	for n := 2; grayIndex(rel, id) >= 0; n++ {
		id = fmt.Sprintf("v%d-%d", version, n)
	}
	return id
}

func grayIndex(rel *pb.Release, id string) int {
	return slices.IndexFunc(rel.GetGrays(), func(g *pb.Gray) bool { return g.GetId() == id })
}

// takeGray removes the gray id from rel and returns it.
func takeGray(rel *pb.Release, id string) (*pb.Gray, error) {
	i := grayIndex(rel, id)
	if i < 0 {
		ids := make([]string, 0, len(rel.GetGrays()))
		for _, g := range rel.GetGrays() {
			ids = append(ids, g.GetId())
		}
		has := "it has no grays"
		if len(ids) > 0 {
			has = "its grays are " + strings.Join(ids, ", ")
		}
		return nil, fmt.Errorf("%w: item %q has no gray %q; %s", ErrGrayNotFound, rel.GetItem(), id, has)
	}
	g := rel.Grays[i]
	rel.Grays = slices.Delete(rel.Grays, i, i+1)
	return g, nil
}

func (p *Proxy) promoteGray(ctx context.Context, req *pb.PromoteGrayRequest) (*pb.Release, error) {
	return p.endGray(ctx, req, req.ExpectedModRevision, "promote-gray", true)
}

func (p *Proxy) abortGray(ctx context.Context, req *pb.AbortGrayRequest) (*pb.Release, error) {
	return p.endGray(ctx, req, req.ExpectedModRevision, "abort-gray", false)
}

// grayRequest is what PromoteGrayRequest and AbortGrayRequest share
// besides their expected_mod_revision.
type grayRequest interface {
	GetTenant() string
	GetItem() string
	GetGrayId() string
	GetReason() string
}

// endGray removes a gray; promote makes its version stable first. A plan
// that drives the gray ends with it: done when promoted, else aborted.
func (p *Proxy) endGray(ctx context.Context, req grayRequest, expected *int64, action string, promote bool) (*pb.Release, error) {
	return p.editRelease(ctx, releaseEdit{
		tenant: req.GetTenant(), item: req.GetItem(), expected: expected, action: action, reason: req.GetReason(),
		apply: func(rel *pb.Release) error {
			g, err := takeGray(rel, req.GetGrayId())
			if err != nil {
				return err
			}
			state, why := pb.Plan_ABORTED, "gray aborted by hand"
			if promote {
				rel.Stable = g.GetVersion()
				state, why = pb.Plan_DONE, "gray promoted by hand"
			}
			if planActive(rel) && rel.GetPlan().GetGrayId() == g.GetId() {
				rel.Plan.State, rel.Plan.Reason = state, why
			}
			return nil
		},
	})
}

func (p *Proxy) releaseLog(ctx context.Context, req *pb.ReleaseLogRequest) (*pb.ReleaseLogResponse, error) {
	r, err := p.itemRoute(ctx, req.GetTenant(), req.GetItem())
	if err != nil {
		return nil, err
	}
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	resp, err := r.cli.Get(ectx, keys.ItemLogs(r.tenant.Name, req.GetItem()), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(maxLogEntries))
	if err != nil {
		return nil, shardError(ctx, r.tenant.Shard, err)
	}
	if len(resp.Kvs) == 0 {
		if _, err := p.getRelease(ctx, &pb.GetReleaseRequest{Tenant: req.GetTenant(), Item: req.GetItem()}); err != nil {
			return nil, err
		}
	}
	out := &pb.ReleaseLogResponse{Entries: make([]*pb.ReleaseLogEntry, 0, len(resp.Kvs))}
	for _, kv := range slices.Backward(resp.Kvs) {
		e := &pb.ReleaseLogEntry{}
		if err := proto.Unmarshal(kv.Value, e); err != nil {
			return nil, corrupt(r, kv.Key, err)
		}
		if e.After != nil {
			e.After.ModRevision = kv.ModRevision
		}
		out.Entries = append(out.Entries, e)
	}
	return out, nil
}

func planStateName(rel *pb.Release) string {
	return strings.ToLower(rel.GetPlan().GetState().String())
}
