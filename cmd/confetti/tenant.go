package main

import (
	"context"

	"github.com/spf13/cobra"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

func newTenantCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:         "tenant",
		Short:       "Create and list tenants, and manage their API keys",
		Annotations: map[string]string{clientAnnotation: ""},
	}
	cmd.AddCommand(newTenantCreateCommand(a), newTenantListCommand(a), newTenantKeyCommand(a))
	return cmd
}

// withProxy dials the shard proxy and runs fn within --command-timeout.
func (a *app) withProxy(ctx context.Context, fn func(ctx context.Context, cc proxyClients) error) error {
	cc, err := a.dial(ctx, "shard proxy", "endpoints", a.endpoints)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, a.commandTimeout)
	defer cancel()
	return fn(ctx, proxyClients{
		tenants:  pb.NewTenantsClient(cc),
		kv:       pb.NewKVClient(cc),
		shards:   pb.NewShardsClient(cc),
		releases: pb.NewReleasesClient(cc),
	})
}

// proxyClients holds the proxy's service clients over one connection.
type proxyClients struct {
	tenants  pb.TenantsClient
	kv       pb.KVClient
	shards   pb.ShardsClient
	releases pb.ReleasesClient
}

func newTenantCreateCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "create NAME",
		Short: "Create a tenant; the proxy places it on a shard",
		Example: `  confetti tenant create acme
  confetti tenant create acme -w json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				t, err := c.tenants.CreateTenant(ctx, &pb.CreateTenantRequest{Name: args[0]})
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.message(t)
				}
				return p.line("created tenant %s on shard %s", t.Name, t.Shard)
			})
		},
	}
}

func newTenantListCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List tenants and the shard each one is on",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				all := &pb.ListTenantsResponse{}
				req := &pb.ListTenantsRequest{}
				for {
					resp, err := c.tenants.ListTenants(ctx, req)
					if err != nil {
						return err
					}
					all.Tenants = append(all.Tenants, resp.Tenants...)
					if resp.NextPageToken == "" {
						break
					}
					req.PageToken = resp.NextPageToken
				}
				p := a.printer()
				if p.json {
					return p.message(all)
				}
				for _, t := range all.Tenants {
					if err := p.line("%s %s", t.Name, t.Shard); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
}
