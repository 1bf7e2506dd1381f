package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

func newReleaseCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Choose which version of an item gateways get: stable, grays, staged plans",
		Long: `Choose which version of an item gateways get. The release of an item
holds its stable version and any number of grays (a version for a
percentage of instances, for instances whose labels match a selector, or
for listed instances); the highest-priority matching gray wins. A staged
plan moves a gray through percentages by itself and pauses when too many
gateways NACK. Every edit may carry --expect-mod-revision so that it fails
instead of overwriting a concurrent edit.`,
		Annotations: map[string]string{clientAnnotation: ""},
	}
	cmd.AddCommand(newReleaseGetCommand(a), newReleaseSetStableCommand(a), newReleaseGrayCommand(a),
		newReleasePromoteCommand(a), newReleaseAbortCommand(a), newReleasePlanCommand(a),
		newReleaseResumeCommand(a), newReleaseAbortPlanCommand(a), newReleaseStatusCommand(a), newReleaseLogCommand(a))
	return cmd
}

// editFlags are the flags every release edit has.
type editFlags struct {
	tenant, reason string
	expected       int64
}

func (f *editFlags) register(cmd *cobra.Command) {
	tenantFlag(cmd, &f.tenant)
	cmd.Flags().StringVar(&f.reason, "reason", "", "why, kept in the release log")
	cmd.Flags().Int64Var(&f.expected, "expect-mod-revision", 0, "edit only if the release is still at this mod revision (from 'release get')")
}

// expectedRev is --expect-mod-revision when given.
func (f *editFlags) expectedRev(cmd *cobra.Command) *int64 {
	if cmd.Flags().Changed("expect-mod-revision") {
		return proto.Int64(f.expected)
	}
	return nil
}

// releaseEdit runs one edit RPC through the proxy and prints the release
// it returns.
func (a *app) releaseEdit(cmd *cobra.Command, edit func(ctx context.Context, c pb.ReleasesClient) (*pb.Release, error)) error {
	return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
		rel, err := edit(ctx, c.releases)
		if err != nil {
			return err
		}
		return a.printRelease(rel)
	})
}

// printRelease prints a release record.
func (a *app) printRelease(rel *pb.Release) error {
	return a.show(rel, func() []string { return releaseLines(rel) })
}

// releaseLines describes a release record.
func releaseLines(rel *pb.Release) []string {
	lines := []string{fmt.Sprintf("%s stable %d mod_revision %d", rel.Item, rel.Stable, rel.ModRevision)}
	for _, g := range rel.Grays {
		lines = append(lines, fmt.Sprintf("gray %s version %d %s priority %d", g.Id, g.Version, describeRule(g.Rule), g.Priority))
	}
	if pl := rel.Plan; pl != nil {
		lines = append(lines, describePlan(pl))
	}
	return lines
}

func describeRule(r *pb.Rule) string {
	switch x := r.GetRule().(type) {
	case *pb.Rule_BasisPoints:
		return "percent " + percentString(x.BasisPoints)
	case *pb.Rule_Selector:
		return "labels " + strconv.Quote(x.Selector)
	case *pb.Rule_Instances:
		return "instances " + strings.Join(x.Instances.GetIds(), ",")
	}
	return "no rule"
}

func describePlan(pl *pb.Plan) string {
	steps := make([]string, len(pl.Steps))
	for i, s := range pl.Steps {
		steps[i] = percentString(s)
	}
	step := ""
	if int(pl.CurrentStep) < len(pl.Steps) {
		step = fmt.Sprintf(" at step %d/%d (%s) since %s", pl.CurrentStep+1, len(pl.Steps), percentString(pl.Steps[pl.CurrentStep]), unixTime(pl.StepStartTime))
	}
	s := fmt.Sprintf("plan %s gray %s version %d steps %s bake %s max-nack %s%s",
		strings.ToLower(pl.State.String()), pl.GrayId, pl.Version, strings.Join(steps, ","),
		time.Duration(pl.BakeSeconds)*time.Second, percentString(pl.MaxNackBasisPoints), step)
	if pl.Reason != "" {
		s += ": " + pl.Reason
	}
	return s
}

// percentString shows basis points as a percentage: 1050 is "10.5%".
func percentString(bp int32) string {
	return strconv.FormatFloat(float64(bp)/100, 'f', -1, 64) + "%"
}

// parsePercent reads "10", "10%" or "0.5%" as basis points.
func parsePercent(s string) (int32, error) {
	f, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || f < 0 || f > 100 {
		return 0, fmt.Errorf("%q is not a percentage from 0 to 100 (such as 10 or 0.5%%)", s)
	}
	bp := math.Round(f * 100)
	if math.Abs(bp-f*100) > 1e-6 {
		return 0, fmt.Errorf("%q has more than two decimals; the finest step is 0.01%%", s)
	}
	return int32(bp), nil
}

func parseVersion(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 1 {
		return 0, fmt.Errorf("version %q must be a number from 1", s)
	}
	return v, nil
}

func newReleaseGetCommand(a *app) *cobra.Command {
	var tenant string
	cmd := &cobra.Command{
		Use:     "get --tenant T ITEM",
		Short:   "Show an item's release: stable version, grays and plan",
		Example: `  confetti release get --tenant acme routes`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				rel, err := c.releases.GetRelease(ctx, &pb.GetReleaseRequest{Tenant: tenant, Item: args[0]})
				if err != nil {
					return err
				}
				return a.printRelease(rel)
			})
		},
	}
	tenantFlag(cmd, &tenant)
	return cmd
}

func newReleaseSetStableCommand(a *app) *cobra.Command {
	var f editFlags
	cmd := &cobra.Command{
		Use:   "set-stable --tenant T ITEM VERSION",
		Short: "Make any published version stable; also the way to roll back",
		Example: `  confetti release set-stable --tenant acme routes 2
  confetti release set-stable --tenant acme routes 1 --reason "roll back: 502s"`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := parseVersion(args[1])
			if err != nil {
				return err
			}
			return a.releaseEdit(cmd, func(ctx context.Context, c pb.ReleasesClient) (*pb.Release, error) {
				return c.SetStable(ctx, &pb.SetStableRequest{Tenant: f.tenant, Item: args[0], Version: v, Reason: f.reason, ExpectedModRevision: f.expectedRev(cmd)})
			})
		},
	}
	f.register(cmd)
	return cmd
}

func newReleaseGrayCommand(a *app) *cobra.Command {
	var (
		f               editFlags
		version         int64
		percent, labels string
		instances       []string
		priority        int32
		id              string
	)
	cmd := &cobra.Command{
		Use:   "gray --tenant T ITEM --version N (--percent P | --labels SELECTOR | --instances A,B)",
		Short: "Start or replace a gray release of a version",
		Long: `Start a gray release: version N goes to a sticky percentage of instances,
to instances whose labels match a selector ("zone in (a,b),tier!=edge",
"k=v", "k!=v", "k notin (..)", "k", "!k"), or to listed instances. A gray
with the id of an existing one replaces it; without --id one is made up.
The highest-priority matching gray wins; gateways no gray matches get the
stable version.`,
		Example: `  confetti release gray --tenant acme routes --version 2 --percent 10
  confetti release gray --tenant acme routes --version 2 --labels 'zone in (a,b),tier!=edge' --priority 5
  confetti release gray --tenant acme routes --version 3 --instances gw-1,gw-2 --id canary`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rule, err := grayRule(cmd, percent, labels, instances)
			if err != nil {
				return err
			}
			gray := &pb.Gray{Id: id, Version: version, Rule: rule, Priority: priority}
			return a.releaseEdit(cmd, func(ctx context.Context, c pb.ReleasesClient) (*pb.Release, error) {
				return c.StartGray(ctx, &pb.StartGrayRequest{Tenant: f.tenant, Item: args[0], Gray: gray, Reason: f.reason, ExpectedModRevision: f.expectedRev(cmd)})
			})
		},
	}
	f.register(cmd)
	fs := cmd.Flags()
	fs.Int64Var(&version, "version", 0, "version the gray delivers (required)")
	fs.StringVar(&percent, "percent", "", "percentage of instances, sticky per instance (10, 0.5%)")
	fs.StringVar(&labels, "labels", "", "label selector the instances must match")
	fs.StringSliceVar(&instances, "instances", nil, "instance ids, comma separated")
	fs.Int32Var(&priority, "priority", 0, "priority among grays; the highest matching one wins")
	fs.StringVar(&id, "id", "", "gray id (default: v<version>)")
	cmd.MarkFlagRequired("version")
	cmd.MarkFlagsMutuallyExclusive("percent", "labels", "instances")
	cmd.MarkFlagsOneRequired("percent", "labels", "instances")
	return cmd
}

// grayRule builds the rule of the one rule flag given.
func grayRule(cmd *cobra.Command, percent, labels string, instances []string) (*pb.Rule, error) {
	switch {
	case cmd.Flags().Changed("percent"):
		bp, err := parsePercent(percent)
		if err != nil {
			return nil, fmt.Errorf("--percent: %w", err)
		}
		return &pb.Rule{Rule: &pb.Rule_BasisPoints{BasisPoints: bp}}, nil
	case cmd.Flags().Changed("labels"):
		return &pb.Rule{Rule: &pb.Rule_Selector{Selector: labels}}, nil
	}
	return &pb.Rule{Rule: &pb.Rule_Instances{Instances: &pb.InstanceList{Ids: instances}}}, nil
}

// grayEditCommand is a release edit that names one gray: promote, abort.
func grayEditCommand(a *app, use, short, example string, call func(ctx context.Context, c pb.ReleasesClient, f *editFlags, expected *int64, item, gray string) (*pb.Release, error)) *cobra.Command {
	var f editFlags
	cmd := &cobra.Command{Use: use, Short: short, Example: example, Args: cobra.ExactArgs(2)}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return a.releaseEdit(cmd, func(ctx context.Context, c pb.ReleasesClient) (*pb.Release, error) {
			return call(ctx, c, &f, f.expectedRev(cmd), args[0], args[1])
		})
	}
	f.register(cmd)
	return cmd
}

func newReleasePromoteCommand(a *app) *cobra.Command {
	return grayEditCommand(a, "promote --tenant T ITEM GRAY", "Make a gray's version stable and remove the gray",
		`  confetti release promote --tenant acme routes v2`,
		func(ctx context.Context, c pb.ReleasesClient, f *editFlags, expected *int64, item, gray string) (*pb.Release, error) {
			return c.PromoteGray(ctx, &pb.PromoteGrayRequest{Tenant: f.tenant, Item: item, GrayId: gray, Reason: f.reason, ExpectedModRevision: expected})
		})
}

func newReleaseAbortCommand(a *app) *cobra.Command {
	return grayEditCommand(a, "abort --tenant T ITEM GRAY", "Remove a gray: its gateways go back to the stable version",
		`  confetti release abort --tenant acme routes v2 --reason "NACKs in zone a"`,
		func(ctx context.Context, c pb.ReleasesClient, f *editFlags, expected *int64, item, gray string) (*pb.Release, error) {
			return c.AbortGray(ctx, &pb.AbortGrayRequest{Tenant: f.tenant, Item: item, GrayId: gray, Reason: f.reason, ExpectedModRevision: expected})
		})
}

func newReleasePlanCommand(a *app) *cobra.Command {
	var (
		f           editFlags
		version     int64
		steps       []string
		bake        time.Duration
		maxNack, id string
	)
	cmd := &cobra.Command{
		Use:   "plan --tenant T ITEM --version N --steps 1,10,50,100",
		Short: "Start a staged rollout that advances by itself and pauses on NACKs",
		Long: `Start a staged rollout: a gray of version N goes to the first step's
percentage of instances; after each bake time it moves to the next step,
and after the last (100) the version becomes stable. When the NACK ratio
of the version exceeds --max-nack the plan pauses itself; resume it with
'release resume' or stop it with 'release abort-plan'.`,
		Example: `  confetti release plan --tenant acme routes --version 2 --steps 1,10,50,100 --bake 5m --max-nack 1%`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			plan := &pb.Plan{GrayId: id, Version: version, BakeSeconds: int64(bake / time.Second)}
			for _, s := range steps {
				bp, err := parsePercent(s)
				if err != nil {
					return fmt.Errorf("--steps: %w", err)
				}
				plan.Steps = append(plan.Steps, bp)
			}
			bp, err := parsePercent(maxNack)
			if err != nil {
				return fmt.Errorf("--max-nack: %w", err)
			}
			plan.MaxNackBasisPoints = bp
			return a.releaseEdit(cmd, func(ctx context.Context, c pb.ReleasesClient) (*pb.Release, error) {
				return c.StartPlan(ctx, &pb.StartPlanRequest{Tenant: f.tenant, Item: args[0], Plan: plan, Reason: f.reason, ExpectedModRevision: f.expectedRev(cmd)})
			})
		},
	}
	f.register(cmd)
	fs := cmd.Flags()
	fs.Int64Var(&version, "version", 0, "version to roll out (required)")
	fs.StringSliceVar(&steps, "steps", nil, "percentages of instances, ascending, ending at 100 (required)")
	fs.DurationVar(&bake, "bake", 5*time.Minute, "time at each step before the next")
	fs.StringVar(&maxNack, "max-nack", "1%", "NACK ratio of the version above which the plan pauses")
	fs.StringVar(&id, "id", "", "id of the plan's gray (default: v<version>); an existing gray of that id is taken over")
	cmd.MarkFlagRequired("version")
	cmd.MarkFlagRequired("steps")
	return cmd
}

// planEditCommand is a release edit of the item's plan: resume, abort.
func planEditCommand(a *app, use, short, example string, call func(ctx context.Context, c pb.ReleasesClient, req *pb.PlanRequest) (*pb.Release, error)) *cobra.Command {
	var f editFlags
	cmd := &cobra.Command{Use: use, Short: short, Example: example, Args: cobra.ExactArgs(1)}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return a.releaseEdit(cmd, func(ctx context.Context, c pb.ReleasesClient) (*pb.Release, error) {
			return call(ctx, c, &pb.PlanRequest{Tenant: f.tenant, Item: args[0], Reason: f.reason, ExpectedModRevision: f.expectedRev(cmd)})
		})
	}
	f.register(cmd)
	return cmd
}

func newReleaseResumeCommand(a *app) *cobra.Command {
	return planEditCommand(a, "resume --tenant T ITEM", "Resume a paused plan; the bake of its step starts again",
		`  confetti release resume --tenant acme routes --reason "fixed the validator"`,
		func(ctx context.Context, c pb.ReleasesClient, req *pb.PlanRequest) (*pb.Release, error) {
			return c.ResumePlan(ctx, req)
		})
}

func newReleaseAbortPlanCommand(a *app) *cobra.Command {
	return planEditCommand(a, "abort-plan --tenant T ITEM", "Stop a plan and remove its gray",
		`  confetti release abort-plan --tenant acme routes`,
		func(ctx context.Context, c pb.ReleasesClient, req *pb.PlanRequest) (*pb.Release, error) {
			return c.AbortPlan(ctx, req)
		})
}

func newReleaseStatusCommand(a *app) *cobra.Command {
	var tenant string
	cmd := &cobra.Command{
		Use:   "status --tenant T ITEM",
		Short: "Count the gateways running, pending and NACKing each version",
		Long: `Count, per version of the item, the gateways that ACKed it (running),
were sent it and have not answered (pending), and refused it (nacked),
with the first NACK messages, from every cache node; and show the release
and the plan's current step.`,
		Example: `  confetti release status --tenant acme routes`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				st, err := c.releases.Status(ctx, &pb.ReleaseStatusRequest{Tenant: tenant, Item: args[0]})
				if err != nil {
					return err
				}
				return a.show(st, func() []string {
					lines := releaseLines(st.Release)
					for _, v := range st.Versions {
						lines = append(lines, fmt.Sprintf("version %d running %d pending %d nacked %d", v.Version, v.Running, v.Pending, v.Nacked))
						for _, e := range v.Errors {
							lines = append(lines, "  nack "+printable([]byte(e)))
						}
					}
					return lines
				})
			})
		},
	}
	tenantFlag(cmd, &tenant)
	return cmd
}

func newReleaseLogCommand(a *app) *cobra.Command {
	var tenant string
	cmd := &cobra.Command{
		Use:     "log --tenant T ITEM",
		Short:   "List the changes of an item's release: when, who, what and why",
		Example: `  confetti release log --tenant acme routes`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				resp, err := c.releases.Log(ctx, &pb.ReleaseLogRequest{Tenant: tenant, Item: args[0]})
				if err != nil {
					return err
				}
				return a.show(resp, func() (lines []string) {
					for _, e := range resp.Entries {
						line := fmt.Sprintf("%s %s %s stable %d grays %d", unixTime(e.Time), e.Author, e.Action, e.After.GetStable(), len(e.After.GetGrays()))
						if e.Reason != "" {
							line += ": " + printable([]byte(e.Reason))
						}
						lines = append(lines, line)
					}
					return lines
				})
			})
		},
	}
	tenantFlag(cmd, &tenant)
	return cmd
}
