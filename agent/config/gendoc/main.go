// Command gendoc prints Vigil's configuration reference as Markdown, for the
// README or docs/:
//
//	go run ./agent/config/gendoc > docs/config.md
//
// The reference is generated from the Config type, so it lists every key with
// its environment variable, type and default.
package main

import (
	"fmt"

	"github.com/vigil-edge/vigil/agent/config"
)

func main() {
	fmt.Print(config.Reference())
}
