package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

func newShardCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:         "shard",
		Short:       "Register, list and drain the etcd clusters tenants are placed on",
		Annotations: map[string]string{clientAnnotation: ""},
	}
	cmd.AddCommand(newShardAddCommand(a), newShardListCommand(a), newShardDrainCommand(a))
	return cmd
}

func newShardAddCommand(a *app) *cobra.Command {
	var (
		endpoints []string
		weight    float64
	)
	cmd := &cobra.Command{
		Use:   "add ID --endpoints URL[,URL...]",
		Short: "Register an etcd cluster as a shard; new tenants start landing on it at once, no tenant moves",
		Example: `  confetti shard add shard-d --endpoints http://10.0.0.7:2379,http://10.0.0.8:2379,http://10.0.0.9:2379
  confetti shard add big --endpoints http://10.0.1.1:2379 --weight 2`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				sh, err := c.shards.AddShard(ctx, &pb.AddShardRequest{Id: args[0], Endpoints: endpoints, Weight: weight})
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.message(sh)
				}
				return p.line("shard %s %s %s", sh.Id, shardStateName(sh.State), strings.Join(sh.Endpoints, ","))
			})
		},
	}
	cmd.Flags().StringSliceVar(&endpoints, "endpoints", nil, "client URLs of the shard's etcd members, comma separated")
	cmd.Flags().Float64Var(&weight, "weight", 0, "share of new tenants relative to other shards (0 means 1)")
	cmd.MarkFlagRequired("endpoints")
	return cmd
}

func newShardListCommand(a *app) *cobra.Command {
	var usage bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List shards with their state and tenants (and, with --usage, keys and bytes)",
		Args:  cobra.NoArgs,
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
					var err error
					if usage {
						err = p.line("%s %s tenants=%d keys=%d bytes=%d %s", sh.Id, shardStateName(sh.State), sh.Tenants, sh.Keys, sh.Bytes, strings.Join(sh.Endpoints, ","))
					} else {
						err = p.line("%s %s tenants=%d %s", sh.Id, shardStateName(sh.State), sh.Tenants, strings.Join(sh.Endpoints, ","))
					}
					if err != nil {
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
	return &cobra.Command{
		Use:   "drain ID",
		Short: "Stop placing new tenants on a shard; its tenants keep working",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				sh, err := c.shards.DrainShard(ctx, &pb.DrainShardRequest{Id: args[0]})
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.message(sh)
				}
				return p.line("shard %s %s tenants=%d", sh.Id, shardStateName(sh.State), sh.Tenants)
			})
		},
	}
}

func shardStateName(s pb.Shard_State) string {
	return strings.ToLower(s.String())
}
