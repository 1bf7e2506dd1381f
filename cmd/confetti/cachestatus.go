package main

import (
	"context"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

func newCacheStatusCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show each cache node's shards: revision, lag behind etcd, history window, sync state",
		Long: `Ask every --cache-endpoints node for its status. One line per node and
shard: the revision the node has applied, etcd's current revision and the
lag between them, the history window (tokens after history_start resume
by replay), the events and bytes it holds, and watch restarts. A shard the
node cannot sync is "unavailable", with the reason in last-error: only its
tenants are unavailable on that node.`,
		Annotations: map[string]string{clientAnnotation: ""},
		Args:        cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := a.printer()
			for _, ep := range a.cacheEndpoints {
				cc, err := a.dial(cmd.Context(), "cache node", "cache-endpoints", []string{ep})
				if err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), a.commandTimeout)
				st, err := pb.NewCacheClient(cc).Status(ctx, &pb.CacheStatusRequest{})
				cancel()
				cc.Close()
				if err != nil {
					return err
				}
				if p.json {
					if err := p.message(st); err != nil {
						return err
					}
					continue
				}
				if err := p.line("%s node=%s subscribers=%d", ep, st.Node, st.Subscribers); err != nil {
					return err
				}
				for _, sh := range st.Shards {
					lag := "?"
					if sh.EtcdRevision > 0 {
						lag = strconv.FormatInt(sh.EtcdRevision-sh.Revision, 10)
					}
					// A node gives up waiting for a shard it cannot sync
					// (its tenants are unavailable there); last-error says
					// why.
					state := "synced"
					switch {
					case !sh.Synced && strings.Contains(sh.LastError, "unavailable on this node"):
						state = "unavailable"
					case !sh.Synced:
						state = "syncing"
					}
					line := "  " + strings.Join([]string{
						sh.Shard, state,
						"rev=" + strconv.FormatInt(sh.Revision, 10), "etcd=" + strconv.FormatInt(sh.EtcdRevision, 10), "lag=" + lag,
						"history=(" + strconv.FormatInt(sh.HistoryStart, 10) + "," + strconv.FormatInt(sh.Revision, 10) + "]",
						"events=" + strconv.FormatInt(sh.HistoryEvents, 10), "bytes=" + strconv.FormatInt(sh.HistoryBytes, 10),
						"tenants=" + strconv.FormatInt(sh.Tenants, 10), "keys=" + strconv.FormatInt(sh.Keys, 10), "restarts=" + strconv.FormatInt(sh.WatchRestarts, 10), "relists=" + strconv.FormatInt(sh.Relists, 10),
					}, " ")
					if sh.LastError != "" {
						line += " last-error=" + sh.LastError
					}
					if err := p.line("%s", line); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
}
