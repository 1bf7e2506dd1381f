// Package apijson is the one JSON shape of Confetti's keys, as the HTTP
// API serves them and the CLI prints them with -w json: proto field names
// (snake_case), a value as a JSON string when it is UTF-8 and in
// value_base64 otherwise, revisions as JSON numbers and lease ids as
// strings (they use all 63 bits, more than a JSON number holds exactly).
// The HTTP KV routes of the shard proxy, `confetti kv` and the
// subscription streams encode with it, so a client parses one shape
// wherever a key comes from:
//
//	resp, err := kv.Put(ctx, &pb.PutRequest{Tenant: t, Key: k, Value: v, PrevKv: true})
//	...
//	apijson.Encode(w, apijson.Written(k, v, resp))
package apijson
