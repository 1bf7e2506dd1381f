package shardproxy

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

// TestUnavailableRPCsSaySo checks that every RPC not served yet answers
// Unimplemented with a message naming it, never a fake success.
func TestUnavailableRPCsSaySo(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	ctx := testCtx(t)
	cases := []struct {
		name string
		call func() error
	}{
		{name: "Tenants.DeleteTenant", call: func() error {
			_, err := a.tenants.DeleteTenant(ctx, &pb.DeleteTenantRequest{Name: "acme"})
			return err
		}},
		{name: "Releases.Publish", call: func() error {
			_, err := a.releases.Publish(ctx, &pb.PublishRequest{})
			return err
		}},
		{name: "Releases.GetVersion", call: func() error {
			_, err := a.releases.GetVersion(ctx, &pb.GetVersionRequest{})
			return err
		}},
		{name: "Releases.History", call: func() error {
			_, err := a.releases.History(ctx, &pb.HistoryRequest{})
			return err
		}},
		{name: "Releases.ListItems", call: func() error {
			_, err := a.releases.ListItems(ctx, &pb.ListItemsRequest{})
			return err
		}},
		{name: "Releases.SetSchema", call: func() error {
			_, err := a.releases.SetSchema(ctx, &pb.SetSchemaRequest{})
			return err
		}},
		{name: "Releases.GetRelease", call: func() error {
			_, err := a.releases.GetRelease(ctx, &pb.GetReleaseRequest{})
			return err
		}},
		{name: "Releases.SetStable", call: func() error {
			_, err := a.releases.SetStable(ctx, &pb.SetStableRequest{})
			return err
		}},
		{name: "Releases.StartGray", call: func() error {
			_, err := a.releases.StartGray(ctx, &pb.StartGrayRequest{})
			return err
		}},
		{name: "Releases.PromoteGray", call: func() error {
			_, err := a.releases.PromoteGray(ctx, &pb.PromoteGrayRequest{})
			return err
		}},
		{name: "Releases.AbortGray", call: func() error {
			_, err := a.releases.AbortGray(ctx, &pb.AbortGrayRequest{})
			return err
		}},
		{name: "Releases.StartPlan", call: func() error {
			_, err := a.releases.StartPlan(ctx, &pb.StartPlanRequest{})
			return err
		}},
		{name: "Releases.ResumePlan", call: func() error {
			_, err := a.releases.ResumePlan(ctx, &pb.PlanRequest{})
			return err
		}},
		{name: "Releases.AbortPlan", call: func() error {
			_, err := a.releases.AbortPlan(ctx, &pb.PlanRequest{})
			return err
		}},
		{name: "Releases.Status", call: func() error {
			_, err := a.releases.Status(ctx, &pb.ReleaseStatusRequest{})
			return err
		}},
		{name: "Releases.Log", call: func() error {
			_, err := a.releases.Log(ctx, &pb.ReleaseLogRequest{})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, tc.call(), codes.Unimplemented, "not available yet", tc.name+": ")
		})
	}

	// Every method the proxy registers is either served or listed above.
	served := []string{
		"Tenants.CreateTenant", "Tenants.GetTenant", "Tenants.ListTenants",
		"Tenants.CreateAPIKey", "Tenants.ListAPIKeys", "Tenants.RevokeAPIKey",
		"Shards.AddShard", "Shards.ListShards", "Shards.DrainShard",
		"KV.Range", "KV.Put", "KV.DeleteRange", "KV.Txn",
		"Leases.Grant", "Leases.Revoke", "Leases.KeepAlive", "Leases.TimeToLive",
		"Leases.Register", "Leases.Deregister", "Leases.ListInstances",
	}
	for _, tc := range cases {
		served = append(served, tc.name)
	}
	srv := grpc.NewServer()
	a.proxy.Register(srv)
	var registered []string
	for svc, info := range srv.GetServiceInfo() {
		for _, m := range info.Methods {
			registered = append(registered, methodName("/"+svc+"/"+m.Name))
		}
	}
	slices.Sort(served)
	slices.Sort(registered)
	if diff := cmp.Diff(served, registered); diff != "" {
		t.Fatalf("methods (-covered +registered):\n%s", diff)
	}
}
