package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

func newShardCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:         "shard",
		Short:       "Register, list, drain, activate and remove the etcd clusters tenants are placed on",
		Annotations: map[string]string{clientAnnotation: ""},
	}
	cmd.AddCommand(newShardAddCommand(a), newShardListCommand(a), newShardDrainCommand(a), newShardActivateCommand(a), newShardRemoveCommand(a))
	return cmd
}

func newShardAddCommand(a *app) *cobra.Command {
	var (
		etcdEndpoints []string
		weight        float64
		force         bool
	)
	cmd := &cobra.Command{
		Use:   "add ID --etcd-endpoints URL[,URL...]",
		Short: "Register an etcd cluster as a shard; new tenants start landing on it at once, no tenant moves",
		Long: `Register an etcd cluster as a shard. The proxy first checks that every
endpoint is a member of one etcd cluster it can reach with its own etcd
credentials and TLS (a Status call each), and that it can write, read back
and delete a probe key under /confetti/ there; otherwise the shard is
refused with the endpoint and the step that failed, and nothing changes.
With --force the shard is registered anyway, as pending: it takes no tenant
until a proxy finds it passing the same check (it then becomes active by
itself) or 'confetti shard activate ID'.

--etcd-endpoints are the shard's own etcd URLs; the global --endpoints
still names the shard proxy to ask.`,
		Example: `  confetti shard add shard-d --etcd-endpoints http://10.0.0.7:2379,http://10.0.0.8:2379,http://10.0.0.9:2379
  confetti shard add big --etcd-endpoints http://10.0.1.1:2379 --weight 2
  confetti shard add later --etcd-endpoints http://10.0.2.1:2379 --force`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				sh, err := c.shards.AddShard(ctx, &pb.AddShardRequest{Id: args[0], Endpoints: etcdEndpoints, Weight: weight, Force: force})
				if err != nil {
					return err
				}
				if sh.State == pb.Shard_PENDING {
					fmt.Fprintf(a.errOut, "shard %s failed the check and takes no tenant until it passes (or `confetti shard activate %s`): %s\n", sh.Id, sh.Id, sh.Health)
				}
				p := a.printer()
				if p.json {
					return p.message(sh)
				}
				return p.line("shard %s %s %s", sh.Id, shardStateName(sh.State), strings.Join(sh.Endpoints, ","))
			})
		},
	}
	cmd.Flags().StringSliceVar(&etcdEndpoints, "etcd-endpoints", nil, "client URLs of the shard's etcd members, comma separated")
	cmd.Flags().Float64Var(&weight, "weight", 0, "share of new tenants relative to other shards (0 means 1)")
	cmd.Flags().BoolVar(&force, "force", false, "register the shard even if it fails the check, as pending: no tenant is placed on it until it passes")
	cmd.MarkFlagRequired("etcd-endpoints")
	return cmd
}

func newShardListCommand(a *app) *cobra.Command {
	var usage bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List shards with their state and tenants (and, with --usage, keys and bytes)",
		Long: `List shards with their state and tenants (and, with --usage, keys and
bytes). A shard the proxy cannot reach or read ends with "unhealthy:" and
the reason: no new tenant is placed on it until it answers again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				resp, err := c.shards.ListShards(ctx, &pb.ListShardsRequest{WithUsage: usage})
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.message(resp)
				}
				for _, sh := range resp.Shards {
					line := fmt.Sprintf("%s %s tenants=%d", sh.Id, shardStateName(sh.State), sh.Tenants)
					if usage {
						line += fmt.Sprintf(" keys=%d bytes=%d", sh.Keys, sh.Bytes)
					}
					line += " " + strings.Join(sh.Endpoints, ",")
					if !sh.Healthy {
						line += " unhealthy: " + sh.Health
					}
					if err := p.line("%s", line); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&usage, "usage", false, "ask every shard for its key count and backend bytes in use (-1: the shard did not answer)")
	return cmd
}

func newShardDrainCommand(a *app) *cobra.Command {
	return newShardStateCommand(a, "drain ID", "Stop placing new tenants on a shard; its tenants keep working (undo with 'shard activate')",
		func(ctx context.Context, c proxyClients, id string) (*pb.Shard, error) {
			return c.shards.DrainShard(ctx, &pb.DrainShardRequest{Id: id})
		}, shardStateLine)
}

func newShardActivateCommand(a *app) *cobra.Command {
	return newShardStateCommand(a, "activate ID", "Place new tenants on a drained or pending shard again (while the proxy finds it healthy)",
		func(ctx context.Context, c proxyClients, id string) (*pb.Shard, error) {
			return c.shards.ActivateShard(ctx, &pb.ActivateShardRequest{Id: id})
		}, shardStateLine)
}

func newShardRemoveCommand(a *app) *cobra.Command {
	return newShardStateCommand(a, "remove ID", "Remove a shard that holds no tenant from the registry (refused while it holds tenants)",
		func(ctx context.Context, c proxyClients, id string) (*pb.Shard, error) {
			return c.shards.RemoveShard(ctx, &pb.RemoveShardRequest{Id: id})
		}, func(sh *pb.Shard) string { return "removed shard " + sh.Id })
}

// newShardStateCommand is a verb that changes one shard and prints it
// with line.
func newShardStateCommand(a *app, use, short string, call func(context.Context, proxyClients, string) (*pb.Shard, error), line func(*pb.Shard) string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				sh, err := call(ctx, c, args[0])
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.message(sh)
				}
				return p.line("%s", line(sh))
			})
		},
	}
}

func shardStateLine(sh *pb.Shard) string {
	return fmt.Sprintf("shard %s %s tenants=%d", sh.Id, shardStateName(sh.State), sh.Tenants)
}

func shardStateName(s pb.Shard_State) string {
	return strings.ToLower(s.String())
}
