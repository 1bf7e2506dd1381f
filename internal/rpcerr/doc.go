// Package rpcerr gives sentinel errors a gRPC code and turns any error into
// a gRPC status at the edge of a server.
//
// Packages declare their sentinels with New, named after the package:
//
//	var ErrTenantNotFound = rpcerr.New(codes.NotFound, "meta: tenant not found")
//
// wrap them with %w to add what the caller should do, and test them with
// errors.Is. Servers call Status once, where a handler returns, so the code
// is decided in one place and the message (the whole wrapped chain) reaches
// the client.
package rpcerr
