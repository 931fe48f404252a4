//go:build tools

// Package tools pins the commands built from this wrapper module (see go.mod).
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
