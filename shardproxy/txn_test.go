package shardproxy

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
)

func putOp(key, value string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_Put{Put: &pb.PutRequest{Key: key, Value: []byte(value)}}}
}

func getOp(key string, prefix bool) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_Range{Range: &pb.RangeRequest{Key: key, Prefix: prefix}}}
}

func TestTxnComparesAndBranches(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{MaxTxnOps: 8})
	tn := a.freshTenant(t, c, "txn")
	ctx := testCtx(t)
	first, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "txn", Key: "a", Value: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	rev := first.Header.Revision
	for _, tc := range []struct {
		name string
		cmp  *pb.Compare
		want bool
	}{
		{name: "value equal", cmp: &pb.Compare{Key: "a", Target: pb.Compare_VALUE, TargetUnion: &pb.Compare_Value{Value: []byte("1")}}, want: true},
		{name: "value not equal", cmp: &pb.Compare{Key: "a", Result: pb.Compare_NOT_EQUAL, Target: pb.Compare_VALUE, TargetUnion: &pb.Compare_Value{Value: []byte("1")}}},
		{name: "version", cmp: &pb.Compare{Key: "a", Target: pb.Compare_VERSION, TargetUnion: &pb.Compare_Version{Version: 1}}, want: true},
		{name: "create revision", cmp: &pb.Compare{Key: "a", Target: pb.Compare_CREATE, TargetUnion: &pb.Compare_CreateRevision{CreateRevision: rev}}, want: true},
		{name: "mod revision greater", cmp: &pb.Compare{Key: "a", Result: pb.Compare_GREATER, Target: pb.Compare_MOD, TargetUnion: &pb.Compare_ModRevision{ModRevision: rev}}},
		{name: "absent key", cmp: &pb.Compare{Key: "missing", Target: pb.Compare_CREATE, TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}}, want: true},
		{name: "range of keys", cmp: &pb.Compare{Key: "a", RangeEnd: "b", Result: pb.Compare_LESS, Target: pb.Compare_MOD, TargetUnion: &pb.Compare_ModRevision{ModRevision: rev + 1}}, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := a.kv.Txn(ctx, &pb.TxnRequest{
				Tenant:  "txn",
				Compare: []*pb.Compare{tc.cmp},
				Success: []*pb.RequestOp{getOp("a", false)},
				Failure: []*pb.RequestOp{getOp("", true)},
			})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Succeeded != tc.want {
				t.Fatalf("succeeded = %v, want %v", resp.Succeeded, tc.want)
			}
			kvs := resp.Responses[0].GetRange().GetKvs()
			if len(kvs) != 1 || kvs[0].Key != "a" {
				t.Fatalf("range in the %v branch returned %v, want only key a, stripped", tc.want, kvs)
			}
		})
	}

	// A successful branch writes atomically; keys stay inside the tenant.
	resp, err := a.kv.Txn(ctx, &pb.TxnRequest{
		Tenant:  "txn",
		Compare: []*pb.Compare{{Key: "a", Target: pb.Compare_VALUE, TargetUnion: &pb.Compare_Value{Value: []byte("1")}}},
		Success: []*pb.RequestOp{putOp("a", "2"), putOp("b", "2"), {Request: &pb.RequestOp_DeleteRange{DeleteRange: &pb.DeleteRangeRequest{Key: "missing"}}}},
	})
	if err != nil || !resp.Succeeded {
		t.Fatalf("txn: %v, %v", resp, err)
	}
	got, err := c.raw[tn.Shard].Get(ctx, keys.KV("txn")+"b")
	if err != nil || len(got.Kvs) != 1 || got.Kvs[0].ModRevision != resp.Header.Revision {
		t.Fatalf("b not written at the txn's revision: %v %v", got, err)
	}
}

func TestTxnRefusesWhatItCannotDo(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{MaxTxnOps: 4})
	tn := a.freshTenant(t, c, "txnbad")
	ctx := testCtx(t)
	for _, tc := range []struct {
		name string
		req  *pb.TxnRequest
		code codes.Code
		msg  string
	}{
		{name: "another tenant's op", req: &pb.TxnRequest{Tenant: "txnbad", Success: []*pb.RequestOp{{Request: &pb.RequestOp_Put{Put: &pb.PutRequest{Tenant: "acme", Key: "k", Value: []byte("x")}}}}},
			code: codes.InvalidArgument, msg: "cross-tenant transactions are not supported"},
		{name: "too many ops", req: &pb.TxnRequest{Tenant: "txnbad", Success: []*pb.RequestOp{putOp("1", ""), putOp("2", ""), putOp("3", ""), putOp("4", ""), putOp("5", "")}},
			code: codes.InvalidArgument, msg: "the limit is 4"},
		{name: "empty key in a put", req: &pb.TxnRequest{Tenant: "txnbad", Success: []*pb.RequestOp{putOp("", "x")}},
			code: codes.InvalidArgument, msg: "success op 0"},
		{name: "compare without a key", req: &pb.TxnRequest{Tenant: "txnbad", Compare: []*pb.Compare{{Target: pb.Compare_VERSION}}},
			code: codes.InvalidArgument, msg: "compare 0"},
		{name: "ttl inside a txn", req: &pb.TxnRequest{Tenant: "txnbad", Success: []*pb.RequestOp{{Request: &pb.RequestOp_Put{Put: &pb.PutRequest{Key: "k", Ttl: 5}}}}},
			code: codes.InvalidArgument, msg: "granted lease"},
		{name: "empty op", req: &pb.TxnRequest{Tenant: "txnbad", Failure: []*pb.RequestOp{{}}},
			code: codes.InvalidArgument, msg: "failure op 0"},
		{name: "unknown tenant", req: &pb.TxnRequest{Tenant: "nobody-here"}, code: codes.NotFound, msg: "confetti tenant create"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.kv.Txn(ctx, tc.req)
			wantStatus(t, err, tc.code, tc.msg)
		})
	}
	got, err := c.raw[tn.Shard].Get(ctx, keys.Tenant("txnbad"), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || got.Count != 0 {
		t.Fatalf("refused transactions wrote %d keys (%v)", got.Count, err)
	}

	// The fence blocks both branches: not even the failure ops run.
	if _, err := c.raw[tn.Shard].Put(ctx, keys.Fence("txnbad"), "moving"); err != nil {
		t.Fatal(err)
	}
	_, err = a.kv.Txn(ctx, &pb.TxnRequest{Tenant: "txnbad",
		Compare: []*pb.Compare{{Key: "k", Target: pb.Compare_VERSION, TargetUnion: &pb.Compare_Version{Version: 99}}},
		Failure: []*pb.RequestOp{putOp("written-while-fenced", "x")}})
	wantStatus(t, err, codes.Unavailable, "fenced")
	got, err = c.raw[tn.Shard].Get(ctx, keys.KV("txnbad"), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || got.Count != 0 {
		t.Fatalf("a fenced transaction wrote %d keys (%v)", got.Count, err)
	}
}
