package rpcerr

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel is an error with a gRPC code.
type Sentinel struct {
	code codes.Code
	msg  string
}

// New returns a sentinel error carrying code.
func New(code codes.Code, msg string) *Sentinel { return &Sentinel{code: code, msg: msg} }

func (e *Sentinel) Error() string { return e.msg }

// Code is the gRPC code of the sentinel.
func (e *Sentinel) Code() codes.Code { return e.code }

// Code returns the gRPC code for err: the code of the first sentinel in
// its chain (a sentinel that wraps a client's status error keeps its own
// code), else a status's code, else the code of a context error, else
// Unknown.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	var se *Sentinel
	if errors.As(err, &se) {
		return se.code
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	return codes.Unknown
}

// Status converts err into a gRPC status error with its code and full
// message. A bare status error is returned unchanged; nil stays nil.
func Status(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	return status.Error(Code(err), err.Error())
}
