package shardproxy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/release"
)

// planAuthor is the author of the changes the plan controller makes.
const planAuthor = "plan-controller"

// maxPlansPerShard bounds the running plans one controller pass reads
// from a shard's plan index; the rest wait for a later pass.
const maxPlansPerShard = 1000

// StartPlan starts a staged rollout that advances by itself.
func (s *releaseService) StartPlan(ctx context.Context, req *pb.StartPlanRequest) (*pb.Release, error) {
	return serve(ctx, s.p, pb.Releases_StartPlan_FullMethodName, req, s.p.startPlan)
}

// ResumePlan resumes a paused plan, restarting the bake of its step.
func (s *releaseService) ResumePlan(ctx context.Context, req *pb.PlanRequest) (*pb.Release, error) {
	return serve(ctx, s.p, pb.Releases_ResumePlan_FullMethodName, req, s.p.resumePlan)
}

// AbortPlan stops a plan and removes its gray.
func (s *releaseService) AbortPlan(ctx context.Context, req *pb.PlanRequest) (*pb.Release, error) {
	return serve(ctx, s.p, pb.Releases_AbortPlan_FullMethodName, req, s.p.abortPlan)
}

func (p *Proxy) startPlan(ctx context.Context, req *pb.StartPlanRequest) (*pb.Release, error) {
	in := req.GetPlan()
	if err := release.CheckPlanSteps(in); err != nil {
		return nil, err
	}
	if in.GetVersion() < 1 {
		return nil, fmt.Errorf("%w: the plan's version %d must be at least 1", ErrInvalidRequest, in.GetVersion())
	}
	if in.GetGrayId() != "" {
		if err := release.ValidGrayID(in.GetGrayId()); err != nil {
			return nil, err
		}
	}
	return p.editRelease(ctx, releaseEdit{
		tenant: req.GetTenant(), item: req.GetItem(), version: in.GetVersion(), expected: req.ExpectedModRevision,
		action: "start-plan", reason: req.GetReason(),
		apply: func(rel *pb.Release) error {
			if planActive(rel) {
				return fmt.Errorf("%w: item %q already has a %s plan on gray %q; abort it first (`confetti release abort-plan --tenant %s %s`)", ErrPlanState, rel.GetItem(), planStateName(rel), rel.GetPlan().GetGrayId(), req.GetTenant(), rel.GetItem())
			}
			plan := &pb.Plan{
				GrayId: in.GetGrayId(), Version: in.GetVersion(), Steps: in.GetSteps(),
				BakeSeconds: in.GetBakeSeconds(), MaxNackBasisPoints: in.GetMaxNackBasisPoints(),
				State: pb.Plan_RUNNING, StepStartTime: p.now().Unix(),
			}
			if plan.GrayId == "" {
				plan.GrayId = newGrayID(rel, plan.Version)
			}
			// The plan takes over a gray of the same id, keeping its
			// priority.
			g := &pb.Gray{Id: plan.GrayId}
			if i := grayIndex(rel, plan.GrayId); i >= 0 {
				g.Priority = rel.Grays[i].GetPriority()
			}
			g.Version = plan.Version
			g.Rule = percent(plan.Steps[0])
			rel.Plan = plan
			return putGray(rel, g)
		},
	})
}

func percent(bp int32) *pb.Rule {
	return &pb.Rule{Rule: &pb.Rule_BasisPoints{BasisPoints: bp}}
}

func (p *Proxy) resumePlan(ctx context.Context, req *pb.PlanRequest) (*pb.Release, error) {
	return p.editRelease(ctx, releaseEdit{
		tenant: req.GetTenant(), item: req.GetItem(), expected: req.ExpectedModRevision,
		action: "resume-plan", reason: req.GetReason(),
		apply: func(rel *pb.Release) error {
			if rel.GetPlan().GetState() != pb.Plan_PAUSED {
				return errPlanNot(req.GetTenant(), rel, "paused", "only a paused plan can be resumed")
			}
			rel.Plan.State = pb.Plan_RUNNING
			rel.Plan.StepStartTime = p.now().Unix()
			rel.Plan.Reason = ""
			return nil
		},
	})
}

func (p *Proxy) abortPlan(ctx context.Context, req *pb.PlanRequest) (*pb.Release, error) {
	return p.editRelease(ctx, releaseEdit{
		tenant: req.GetTenant(), item: req.GetItem(), expected: req.ExpectedModRevision,
		action: "abort-plan", reason: req.GetReason(),
		apply: func(rel *pb.Release) error {
			if !planActive(rel) {
				return errPlanNot(req.GetTenant(), rel, "running or paused", "there is nothing to abort")
			}
			if i := grayIndex(rel, rel.Plan.GetGrayId()); i >= 0 {
				rel.Grays = append(rel.Grays[:i], rel.Grays[i+1:]...)
			}
			rel.Plan.State = pb.Plan_ABORTED
			rel.Plan.Reason = "aborted by hand"
			if req.GetReason() != "" {
				rel.Plan.Reason += ": " + req.GetReason()
			}
			return nil
		},
	})
}

// errPlanNot refuses a plan edit of tenant for the plan's state.
func errPlanNot(tenant string, rel *pb.Release, want, why string) error {
	if rel.GetPlan() == nil {
		return fmt.Errorf("%w: item %q has no plan; start one with `confetti release plan --tenant %s %s --version N --steps 1,10,50,100`", ErrPlanState, rel.GetItem(), tenant, rel.GetItem())
	}
	return fmt.Errorf("%w: the plan of item %q is %s, not %s; %s", ErrPlanState, rel.GetItem(), planStateName(rel), want, why)
}

// nextPlanStep decides what a running plan does now, given the rollout
// counts of the item's gateways, and changes rel accordingly. It returns
// the log action, or "" when nothing changes. In order: a NACK ratio of
// the plan's version over the limit pauses the plan; a finished bake
// moves to the next step's percentage; a finished bake of the last step
// promotes the version to stable, removes the gray and ends the plan.
func nextPlanStep(rel *pb.Release, counts map[int64]*pb.VersionStatus, now time.Time) (action string) {
	plan := rel.GetPlan()
	if plan.GetState() != pb.Plan_RUNNING {
		return ""
	}
	gi := grayIndex(rel, plan.GetGrayId())
	if gi < 0 {
		plan.State = pb.Plan_ABORTED
		plan.Reason = fmt.Sprintf("gray %q is gone", plan.GetGrayId())
		return "plan-abort"
	}
	step := plan.GetCurrentStep()
	if vs := counts[plan.GetVersion()]; vs != nil {
		total := vs.GetRunning() + vs.GetPending() + vs.GetNacked()
		if total > 0 && vs.GetNacked()*release.Buckets > int64(plan.GetMaxNackBasisPoints())*total {
			plan.State = pb.Plan_PAUSED
			plan.Reason = fmt.Sprintf("%d of %d gateways NACKed version %d at step %d (%d basis points), over the limit of %d basis points",
				vs.GetNacked(), total, plan.GetVersion(), step+1, plan.GetSteps()[step], plan.GetMaxNackBasisPoints())
			if len(vs.GetErrors()) > 0 {
				plan.Reason += "; first: " + vs.GetErrors()[0]
			}
			return "plan-pause"
		}
	}
	if now.Unix()-plan.GetStepStartTime() < plan.GetBakeSeconds() {
		return ""
	}
	if int(step)+1 < len(plan.GetSteps()) {
		plan.CurrentStep++
		plan.StepStartTime = now.Unix()
		rel.Grays[gi].Rule = percent(plan.GetSteps()[plan.CurrentStep])
		return "plan-step"
	}
	rel.Stable = plan.GetVersion()
	rel.Grays = append(rel.Grays[:gi], rel.Grays[gi+1:]...)
	plan.State = pb.Plan_DONE
	plan.Reason = ""
	return "plan-done"
}

// planController advances the running staged rollouts of every shard. One
// runs in every proxy; they need no coordination, since every change is a
// compare-and-swap on the release record's mod revision and a loser just
// finds the change made at its next pass.
//
// It finds running plans through the shard's plan index (keys.PlansRoot),
// which the release writes keep in the same transaction as the record: a
// pass costs one keys-only range per shard plus, per running plan, one
// read of its record and one rollout read, whatever the number of tenants
// and items.
type planController struct {
	p        *Proxy
	interval time.Duration
	lg       *zap.Logger
	errors   prometheus.Counter
	// pauses counts the plans this controller paused.
	pauses prometheus.Counter

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (c *planController) run() {
	defer c.wg.Done()
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			c.pass(c.ctx)
		}
	}
}

// pass checks every running plan once.
func (c *planController) pass(ctx context.Context) {
	for _, sh := range c.p.store.Shards() {
		if c.p.health.down(sh.ID) {
			// Its index could only time out; its tenants' plans advance
			// once the shard is back.
			continue
		}
		cli, err := c.p.clients.Get(sh.ID)
		if err != nil {
			c.fail("plan index unreadable", zap.String("shard", sh.ID), zap.Error(err))
			continue
		}
		ectx, cancel := c.p.etcdCtx(ctx)
		resp, err := cli.Get(ectx, keys.PlansRoot, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(maxPlansPerShard))
		cancel()
		if err != nil {
			c.fail("plan index unreadable", zap.String("shard", sh.ID), zap.Error(err))
			continue
		}
		for _, kv := range resp.Kvs {
			tenant, item, ok := keys.SplitPlan(string(kv.Key))
			// The index of a tenant that moved away stays behind on its
			// old shard; the tenant's current shard has its own.
			if t, found := c.p.store.Tenant(tenant); !ok || !found || t.Shard != sh.ID {
				continue
			}
			if err := c.advance(ctx, tenant, item); err != nil {
				c.fail("plan not advanced", zap.String("tenant", tenant), zap.String("item", item), zap.Error(err))
			}
		}
	}
}

func (c *planController) fail(msg string, fields ...zap.Field) {
	c.errors.Inc()
	c.lg.Warn(msg, fields...)
}

// advance moves one item's plan on, if it is due.
func (c *planController) advance(ctx context.Context, tenant, item string) error {
	r, err := c.p.route(ctx, tenant)
	if err != nil {
		return err
	}
	st, err := c.p.readRelease(ctx, r, item)
	if err != nil {
		return err
	}
	if !planRunning(st.rel) {
		return c.dropIndex(ctx, r, item, st.modRev)
	}
	gws, err := c.p.rollouts.Rollout(ctx, tenant, item)
	if err != nil {
		return err
	}
	rel := proto.CloneOf(st.rel)
	action := nextPlanStep(rel, tally(gws), c.p.now())
	if action == "" {
		return nil
	}
	cmps, ops, err := c.p.releaseOps(r, item, st.modRev, st.rel, rel, st.lastLog+1, logEntry{author: planAuthor, action: action, reason: rel.GetPlan().GetReason()})
	if err != nil {
		return err
	}
	// A failed compare means the record changed since it was read: the
	// next pass looks again.
	if _, _, err = c.p.cfgWrite(ctx, r, cmps, ops, ""); err != nil {
		return err
	}
	if action == "plan-pause" {
		c.pauses.Inc()
	}
	return nil
}

// dropIndex removes the plan index key of a record without a running
// plan, if the record is still at modRev.
func (c *planController) dropIndex(ctx context.Context, r route, item string, modRev int64) error {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(keys.ItemRelease(r.tenant.Name, item)), "=", modRev)}
	_, _, err := c.p.cfgWrite(ctx, r, cmps, []clientv3.Op{clientv3.OpDelete(keys.Plan(r.tenant.Name, item))}, "")
	return err
}

// startReleases sets up what the Releases service needs: the schema
// cache, the rollout reader and the plan controller.
func (p *Proxy) startReleases() error {
	p.now = p.cfg.Now
	p.schemas = newSchemas()
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "confetti",
		Subsystem: "proxy",
		Name:      "rollout_node_failures_total",
		Help:      "Rollout state requests to a cache node that failed, by node; its gateways are missing from that status or plan step.",
	}, []string{"node"})
	planErrors := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "confetti",
		Subsystem: "proxy",
		Name:      "plan_errors_total",
		Help:      "Staged rollout checks that failed (shard or cache nodes unreachable); the plan is checked again at the next pass.",
	})
	pauses := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "confetti",
		Subsystem: "proxy",
		Name:      "plan_pauses_total",
		Help:      "Staged rollouts paused by this proxy because too many gateways NACKed the plan's version.",
	})
	if reg := p.cfg.Registerer; reg != nil {
		var err error
		if failures, err = register(reg, failures); err != nil {
			return fmt.Errorf("shardproxy: register metrics: %w", err)
		}
		if planErrors, err = register(reg, planErrors); err != nil {
			return fmt.Errorf("shardproxy: register metrics: %w", err)
		}
		if pauses, err = register(reg, pauses); err != nil {
			return fmt.Errorf("shardproxy: register metrics: %w", err)
		}
	}
	p.rollouts = p.cfg.Rollouts
	if p.rollouts == nil {
		p.rollouts = newCacheRollouts(p.store, p.cfg, failures)
	}
	c := &planController{p: p, interval: p.cfg.PlanInterval, lg: p.lg.Named("plans"), errors: planErrors, pauses: pauses}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	p.plans = c
	if c.interval > 0 {
		c.wg.Add(1)
		go c.run()
	}
	return nil
}

// stopReleases stops the plan controller and closes the connections to
// cache nodes.
func (p *Proxy) stopReleases() {
	p.plans.cancel()
	p.plans.wg.Wait()
	if cr, ok := p.rollouts.(*cacheRollouts); ok {
		cr.close()
	}
}
