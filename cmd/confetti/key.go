package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/etcdauth"
	"github.com/confetti-io/confetti/internal/meta"
)

var keyRoles = map[string]pb.Role{
	"reader":   pb.Role_READER,
	"writer":   pb.Role_WRITER,
	"admin":    pb.Role_ADMIN,
	"operator": pb.Role_OPERATOR,
}

func roleName(r pb.Role) string { return strings.ToLower(r.String()) }

// newTenantKeyCommand is `confetti tenant key`: a tenant's API keys,
// through the shard proxy.
func newTenantKeyCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Create, list and revoke API keys (per tenant: reader, writer, admin; or operator)",
		Long: `Create, list and revoke API keys. A tenant key is a reader (read and
subscribe), a writer (also write keys and leases) or an admin (also manage
the tenant's keys and releases) of one tenant. Operator keys manage shards
and tenants and may act on every tenant; only operator keys create them.`,
	}
	cmd.AddCommand(newTenantKeyCreateCommand(a), newTenantKeyListCommand(a), newTenantKeyRevokeCommand(a))
	return cmd
}

func newTenantKeyCreateCommand(a *app) *cobra.Command {
	var role, name string
	cmd := &cobra.Command{
		Use:   "create [TENANT] --role reader|writer|admin|operator",
		Short: "Create an API key and print its secret, which is shown only this once",
		Long: `Create an API key and print it (the whole key, to send as the X-API-Key
header or the x-api-key gRPC metadata, or to pass to --api-key) on standard
output. Meta stores only a hash of it: it cannot be shown again. An operator
key names no tenant.`,
		Example: `  confetti tenant key create acme --role writer --name deployer
  KEY=$(confetti tenant key create acme --role reader --name gateways)
  confetti tenant key create --role operator --name alice`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, ok := keyRoles[role]
			if !ok {
				return fmt.Errorf("--role must be reader, writer, admin or operator, not %q", role)
			}
			req := &pb.CreateAPIKeyRequest{Role: r, Name: name}
			if len(args) == 1 {
				req.Tenant = args[0]
			}
			switch {
			case r == pb.Role_OPERATOR && req.Tenant != "":
				return fmt.Errorf("an operator key belongs to no tenant: drop %q, or choose --role reader, writer or admin", req.Tenant)
			case r != pb.Role_OPERATOR && req.Tenant == "":
				return fmt.Errorf("name the tenant of the %s key: confetti tenant key create TENANT --role %s", role, role)
			}
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				resp, err := c.tenants.CreateAPIKey(ctx, req)
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.message(resp)
				}
				fmt.Fprintf(a.errOut, "created %s; its secret is shown only this once:\n", describeKey(resp.Key))
				return p.line("%s", resp.Secret)
			})
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "reader, writer, admin or operator (required)")
	cmd.Flags().StringVar(&name, "name", "", "label of the key for people and logs (recorded as the author of releases)")
	cmd.MarkFlagRequired("role")
	return cmd
}

func newTenantKeyListCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list [TENANT]",
		Short: "List a tenant's API keys (the operator keys without TENANT), without secrets",
		Example: `  confetti tenant key list acme
  confetti tenant key list`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.ListAPIKeysRequest{}
			if len(args) == 1 {
				req.Tenant = args[0]
			}
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				resp, err := c.tenants.ListAPIKeys(ctx, req)
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.message(resp)
				}
				for _, k := range resp.Keys {
					name := k.Name
					if name == "" {
						name = "-"
					}
					created := time.Unix(k.CreateTime, 0).UTC().Format(time.RFC3339)
					if err := p.line("%s %s %s %s", k.Id, roleName(k.Role), name, created); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
}

func newTenantKeyRevokeCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API key; every proxy and cache node refuses it within seconds",
		Long: `Revoke an API key by its id (the part after cft_ and before the next _, as
'confetti tenant key list' shows it). Every proxy and cache node refuses the
key as soon as its meta watch delivers the revocation, normally within a
second, and ends the subscriptions opened with it.`,
		Example: `  confetti tenant key revoke 3xk2m7qa9d4fhw2b`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if k, err := auth.ParseKey(id); err == nil {
				// A whole key was given: revoke it by its id.
				id = k.ID
			}
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				resp, err := c.tenants.RevokeAPIKey(ctx, &pb.RevokeAPIKeyRequest{Id: id})
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.message(resp)
				}
				return p.line("revoked key %s", id)
			})
		},
	}
}

func describeKey(k *pb.APIKey) string {
	if k.GetRole() == pb.Role_OPERATOR {
		return fmt.Sprintf("operator key %s", k.GetId())
	}
	return fmt.Sprintf("%s key %s of tenant %s", roleName(k.GetRole()), k.GetId(), k.GetTenant())
}

// newKeyCommand is `confetti key`: API key tasks that go to meta directly.
func newKeyCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Bootstrap the first operator key of a cluster (straight into meta)",
	}
	cmd.AddCommand(newKeyBootstrapCommand(a))
	return cmd
}

func newKeyBootstrapCommand(a *app) *cobra.Command {
	var (
		endpoints []string
		name      string
		etcd      etcdFlags
		timeout   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "bootstrap --meta-endpoints URL[,URL...]",
		Short: "Create an operator key in meta and print it once: the first key of a new cluster",
		Long: `Create an operator key by writing its record straight into the meta etcd
cluster, for a cluster that has no key yet (the proxies require one for
every request). It needs what the proxies have: the meta endpoints and, with
etcd auth, etcd credentials. The key is printed once on standard output;
create further keys with it through the proxy ('confetti tenant key create').`,
		Example: `  confetti key bootstrap --meta-endpoints http://10.0.0.1:2379 --etcd-username confetti --etcd-password-file /run/secrets/etcd --name ops`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			etcdConfig, err := etcd.clientConfig(zap.NewNop())
			if err != nil {
				return err
			}
			key, err := auth.NewKey()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			metaErr := func(err error) error {
				return fmt.Errorf("meta etcd %s: %w (check --meta-endpoints and the etcd credentials: --etcd-username with --etcd-password-file, or --etcd-cert)", strings.Join(endpoints, ","), err)
			}
			cli, err := etcdauth.New(etcdConfig(endpoints))
			if err != nil {
				return metaErr(err)
			}
			defer cli.Close()
			// One read first: etcd refuses missing or wrong credentials
			// and missing permissions at once, and its error is what the
			// user needs; the store would retry it until --timeout.
			if _, err := cli.Get(ctx, meta.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
				return metaErr(err)
			}
			store, err := meta.New(cli, meta.Config{})
			if err != nil {
				return err
			}
			defer store.Close()
			if err := store.WaitReady(ctx); err != nil {
				return fmt.Errorf("%w (is meta at %s, and are the etcd credentials right?)", err, strings.Join(endpoints, ","))
			}
			rec, err := store.CreateAPIKey(ctx, meta.APIKey{ID: key.ID, Role: meta.RoleOperator, Name: name, SHA256: key.Hash()})
			if err != nil {
				return err
			}
			p := a.printer()
			if p.json {
				return p.message(&pb.CreateAPIKeyResponse{
					Key:    &pb.APIKey{Id: rec.ID, Role: pb.Role_OPERATOR, Name: rec.Name, CreateTime: rec.CreateTime},
					Secret: key.String(),
				})
			}
			fmt.Fprintf(a.errOut, "created operator key %s; its secret is shown only this once:\n", rec.ID)
			return p.line("%s", key.String())
		},
	}
	fs := cmd.Flags()
	fs.StringSliceVar(&endpoints, "meta-endpoints", []string{defaultMetaEndpoint}, "client URLs of the meta etcd cluster, comma separated")
	fs.StringVar(&name, "name", "bootstrap", "label of the key for people and logs")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for meta")
	etcd.register(fs)
	return cmd
}
