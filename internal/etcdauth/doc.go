// Package etcdauth builds the etcd clients of Confetti's components so
// that they never storm etcd's Authenticate: each client holds one token,
// sends it with every request, and when etcd refuses it (after an etcd
// restart with simple tokens, or when a JWT token expires) fetches one new
// token for all of its requests, which wait for that fetch and retry.
//
//	cli, err := etcdauth.New(clientv3.Config{Endpoints: eps, Username: "confetti", Password: pw})
package etcdauth
