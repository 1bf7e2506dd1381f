package apijson

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

func TestShapes(t *testing.T) {
	header := &pb.ResponseHeader{Revision: 9}
	tests := []struct {
		name string
		v    any
		want string
	}{
		{
			name: "a UTF-8 value is a string, revisions numbers, the lease a string",
			v:    NewKeyValue(&pb.KeyValue{Key: "/routes/1", Value: []byte(`{"uri":"/a?b=<c>&d"}`), CreateRevision: 4, ModRevision: 5, Version: 2, Lease: 7587886521346113605}, false),
			want: `{"key":"/routes/1","value":"{\"uri\":\"/a?b=<c>&d\"}","create_revision":4,"mod_revision":5,"version":2,"lease":"7587886521346113605"}`,
		},
		{
			name: "a binary value is base64",
			v:    NewKeyValue(&pb.KeyValue{Key: "bin", Value: []byte{0xff, 0}, CreateRevision: 1, ModRevision: 1, Version: 1}, false),
			want: `{"key":"bin","value_base64":"/wA=","create_revision":1,"mod_revision":1,"version":1,"lease":"0"}`,
		},
		{
			name: "an empty value is an empty string",
			v:    NewKeyValue(&pb.KeyValue{Key: "e", CreateRevision: 1, ModRevision: 1, Version: 1}, false),
			want: `{"key":"e","value":"","create_revision":1,"mod_revision":1,"version":1,"lease":"0"}`,
		},
		{
			name: "keys only leave the value out",
			v:    NewKeyValue(&pb.KeyValue{Key: "k", Value: []byte("v"), CreateRevision: 1, ModRevision: 1, Version: 1}, true),
			want: `{"key":"k","create_revision":1,"mod_revision":1,"version":1,"lease":"0"}`,
		},
		{
			name: "an item of a subscription names its kind and version",
			v: NewKeyValue(&pb.KeyValue{Key: "routes", Value: []byte("x"), ModRevision: 3, Kind: pb.KeyValue_ITEM,
				Item: &pb.ItemRef{Item: "routes", Version: 2, GrayId: "v2", ContentHash: "ab"}}, false),
			want: `{"key":"routes","value":"x","create_revision":0,"mod_revision":3,"version":0,"lease":"0","kind":"ITEM","item":{"item":"routes","version":2,"gray_id":"v2","content_hash":"ab"}}`,
		},
		{
			name: "a put that created the key",
			v:    Written("/a", []byte("1"), &pb.PutResponse{Header: header}),
			want: `{"key":"/a","value":"1","create_revision":9,"mod_revision":9,"version":1,"lease":"0"}`,
		},
		{
			name: "a put that replaced the key keeps its creation",
			v:    Written("/a", []byte("2"), &pb.PutResponse{Header: header, Lease: 12, PrevKv: &pb.KeyValue{Key: "/a", CreateRevision: 4, ModRevision: 6, Version: 3}}),
			want: `{"key":"/a","value":"2","create_revision":4,"mod_revision":9,"version":4,"lease":"12"}`,
		},
		{
			name: "a listing",
			v:    NewList(&pb.RangeResponse{Header: header, Kvs: []*pb.KeyValue{{Key: "a", Value: []byte("1"), CreateRevision: 2, ModRevision: 2, Version: 1}}, Count: 3, More: true}, false),
			want: `{"kvs":[{"key":"a","value":"1","create_revision":2,"mod_revision":2,"version":1,"lease":"0"}],"count":3,"more":true,"revision":9}`,
		},
		{
			name: "an empty listing has an empty list",
			v:    NewList(&pb.RangeResponse{Header: header}, false),
			want: `{"kvs":[],"count":0,"more":false,"revision":9}`,
		},
		{
			name: "a delete",
			v:    NewDeleted(&pb.DeleteRangeResponse{Header: header, Deleted: 2}),
			want: `{"deleted":2,"revision":9}`,
		},
		{
			name: "events of a subscription, a token per transaction",
			v: func() any {
				evs := NewEvents(&pb.Events{Txns: []*pb.Txn{
					{Revision: 5, Token: "t5", Events: []*pb.Event{{Type: pb.Event_PUT, Kv: &pb.KeyValue{Key: "a", Value: []byte("1"), CreateRevision: 5, ModRevision: 5, Version: 1}}}},
					{Revision: 6, Token: "t6", Events: []*pb.Event{{Type: pb.Event_DELETE, Kv: &pb.KeyValue{Key: "a", ModRevision: 6}, PrevKv: &pb.KeyValue{Key: "a", Value: []byte("1"), CreateRevision: 5, ModRevision: 5, Version: 1}}}},
				}})
				return Message{Events: &evs}
			}(),
			want: `{"events":{"txns":[{"revision":5,"token":"t5","events":[{"type":"PUT","kv":{"key":"a","value":"1","create_revision":5,"mod_revision":5,"version":1,"lease":"0"}}]},` +
				`{"revision":6,"token":"t6","events":[{"type":"DELETE","kv":{"key":"a","value":"","create_revision":0,"mod_revision":6,"version":0,"lease":"0"},"prev_kv":{"key":"a","value":"1","create_revision":5,"mod_revision":5,"version":1,"lease":"0"}}]}]}}`,
		},
		{
			name: "the state of a subscription",
			v: func() any {
				r := NewReset([]*pb.KeyValue{{Key: "a", Value: []byte("1"), CreateRevision: 2, ModRevision: 2, Version: 1}}, "t2")
				return Message{Reset: &r}
			}(),
			want: `{"reset":{"token":"t2","kvs":[{"key":"a","value":"1","create_revision":2,"mod_revision":2,"version":1,"lease":"0"}],"last":true}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want+"\n", string(b)); diff != "" {
				t.Errorf("JSON (-want +got):\n%s", diff)
			}
		})
	}
}
