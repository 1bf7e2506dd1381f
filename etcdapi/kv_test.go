package etcdapi_test

import (
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/internal/keys"
)

func keysOf(resp *clientv3.GetResponse) []string {
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key)+"="+string(kv.Value))
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// An unmodified clientv3 client reads and writes its tenant as a whole
// etcd: the keys it writes are the tenant's plain keys, physically under
// the tenant's prefix, and another tenant sees none of them.
func TestKVThroughTheEtcdFrontDoor(t *testing.T) {
	s := newStack(t, cache.Config{}, "acme", "other")
	ctx := ctxT(t)
	cli := s.client("acme")

	p1, err := cli.Put(ctx, "/routes/1", "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/routes/2", "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/routes/3", "b"); err != nil {
		t.Fatal(err)
	}
	put, err := cli.Put(ctx, "/routes/1", "z", clientv3.WithPrevKV())
	if err != nil || put.PrevKv == nil || string(put.PrevKv.Value) != "a" {
		t.Fatalf("put with prev_kv: %v, %v", put, err)
	}
	if put.Header.ClusterId == 0 || put.Header.MemberId == 0 || put.Header.RaftTerm == 0 || put.Header.Revision <= p1.Header.Revision {
		t.Fatalf("header %v", put.Header)
	}
	phys := s.tc.ShardClient(t, shardOf(t, s, "acme"))
	if got, err := phys.Get(ctx, keys.KV("acme")+"/routes/1"); err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "z" {
		t.Fatalf("physical key: %v, %v", got, err)
	}

	// Linearizable (default) and serializable reads come from the cache.
	for _, opts := range [][]clientv3.OpOption{{clientv3.WithPrefix()}, {clientv3.WithPrefix(), clientv3.WithSerializable()}} {
		resp, err := cli.Get(ctx, "/routes/", opts...)
		if err != nil || !equal(keysOf(resp), []string{"/routes/1=z", "/routes/2=c", "/routes/3=b"}) {
			t.Fatalf("get prefix: %v, %v", resp, err)
		}
	}
	resp, err := cli.Get(ctx, "/routes/", clientv3.WithPrefix(), clientv3.WithLimit(2))
	if err != nil || !equal(keysOf(resp), []string{"/routes/1=z", "/routes/2=c"}) || !resp.More || resp.Count != 3 {
		t.Fatalf("get limit: %v, %v", resp, err)
	}
	resp, err = cli.Get(ctx, "/routes/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByValue, clientv3.SortDescend), clientv3.WithLimit(2))
	if err != nil || !equal(keysOf(resp), []string{"/routes/1=z", "/routes/2=c"}) || !resp.More {
		t.Fatalf("get sorted: %v, %v", resp, err)
	}
	resp, err = cli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithMinModRev(put.Header.Revision))
	if err != nil || !equal(keysOf(resp), []string{"/routes/1=z"}) {
		t.Fatalf("get min mod revision: %v, %v", resp, err)
	}
	resp, err = cli.Get(ctx, "/routes/1", clientv3.WithRev(p1.Header.Revision))
	if err != nil || !equal(keysOf(resp), []string{"/routes/1=a"}) {
		t.Fatalf("get at revision: %v, %v", resp, err)
	}
	resp, err = cli.Get(ctx, "/routes/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 3 || len(resp.Kvs) != 0 {
		t.Fatalf("count only: %v, %v", resp, err)
	}

	// ignore_value keeps the value and changes the lease only.
	if _, err := cli.Put(ctx, "/routes/2", "", clientv3.WithIgnoreValue()); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/nope", "", clientv3.WithIgnoreValue()); !errorIs(err, rpctypes.ErrGRPCKeyNotFound) {
		t.Fatalf("ignore_value of a missing key: %v", err)
	}

	// Txn: compares and both branches.
	txn, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("/routes/1"), "=", "z"), clientv3.Compare(clientv3.Version("/routes/2"), ">", 0)).
		Then(clientv3.OpPut("/routes/4", "d"), clientv3.OpGet("/routes/", clientv3.WithPrefix())).
		Else(clientv3.OpDelete("/routes/1")).Commit()
	if err != nil || !txn.Succeeded || len(txn.Responses) != 2 || len(txn.Responses[1].GetResponseRange().Kvs) != 4 {
		t.Fatalf("txn: %v, %v", txn, err)
	}
	txn, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision("/routes/1"), "<", 1)).Then(clientv3.OpPut("/x", "1")).Else(clientv3.OpGet("/routes/1")).Commit()
	if err != nil || txn.Succeeded || string(txn.Responses[0].GetResponseRange().Kvs[0].Value) != "z" {
		t.Fatalf("failing txn: %v, %v", txn, err)
	}
	_, err = cli.Txn(ctx).Then(clientv3.OpTxn(nil, nil, nil)).Commit()
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("nested txn: %v, want Unimplemented", err)
	}

	del, err := cli.Delete(ctx, "/routes/", clientv3.WithPrefix(), clientv3.WithPrevKV())
	if err != nil || del.Deleted != 4 || len(del.PrevKvs) != 4 {
		t.Fatalf("delete prefix: %v, %v", del, err)
	}

	// Compact is refused.
	if _, err := cli.Compact(ctx, put.Header.Revision); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("compact: %v, want PermissionDenied", err)
	}

	// Another tenant's etcd is its own.
	if _, err := cli.Put(ctx, "/shared", "acme"); err != nil {
		t.Fatal(err)
	}
	other := s.client("other")
	resp, err = other.Get(ctx, "", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("other tenant's whole keyspace: %v, %v", resp, err)
	}
	if _, err := other.Put(ctx, "/shared", "other"); err != nil {
		t.Fatal(err)
	}
	resp, err = cli.Get(ctx, "/shared")
	if err != nil || !equal(keysOf(resp), []string{"/shared=acme"}) {
		t.Fatalf("acme after other's put: %v, %v", resp, err)
	}

	// No credentials, or a wrong key, are refused.
	anon, err := clientv3.New(clientv3.Config{Endpoints: []string{s.addr}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.Get(ctx, "/shared"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no credentials: %v, want Unauthenticated", err)
	}
	if _, err := clientv3.New(clientv3.Config{Endpoints: []string{s.addr}, Username: "other", Password: s.keys["acme"], Logger: zap.NewNop()}); !errorIs(err, rpctypes.ErrGRPCAuthFailed) {
		t.Fatalf("acme's key as other: %v, want auth failed", err)
	}
}

func errorIs(err, want error) bool {
	return err != nil && rpctypes.ErrorDesc(err) == rpctypes.ErrorDesc(want)
}

func shardOf(t *testing.T, s *stack, tenant string) string {
	st, _ := s.tc.NewStore(t)
	tn, err := st.LookupTenant(ctxT(t), tenant)
	if err != nil {
		t.Fatal(err)
	}
	return tn.Shard
}
