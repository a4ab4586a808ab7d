package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// Completion is `vigil completion bash|zsh`: a script that completes the
// subcommands (names lists them), and each subcommand's flags as its -h
// lists them (so the script never goes stale), then file names.
func Completion(names func() []string) func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return func(_ context.Context, args []string, stdout, stderr io.Writer) error {
		return completion(names(), args, stdout, stderr)
	}
}

func completion(names []string, args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 || (args[0] != "bash" && args[0] != "zsh") {
		fmt.Fprintln(stderr, "usage: vigil completion bash|zsh\n\n"+
			"bash: source <(vigil completion bash)   or save it as /usr/share/bash-completion/completions/vigil\n"+
			"zsh:  vigil completion zsh > \"${fpath[1]}/_vigil\"")
		return ErrUsage
	}
	cmds := strings.Join(names, " ")
	if args[0] == "bash" {
		fmt.Fprintf(stdout, bashCompletion, cmds)
	} else {
		fmt.Fprintf(stdout, zshCompletion, cmds)
	}
	return nil
}

const bashCompletion = `# bash completion for vigil (vigil completion bash)
_vigil() {
	local cur=${COMP_WORDS[COMP_CWORD]}
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "%s --version help" -- "$cur"))
		return
	fi
	local cmd=${COMP_WORDS[1]}
	case $cmd in
	config) [ "$COMP_CWORD" -eq 2 ] && { COMPREPLY=($(compgen -W "print" -- "$cur")); return; } ;;
	completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur")); return ;;
	esac
	if [[ $cur == -* ]]; then
		local flags
		flags=$(vigil "$cmd" -h 2>&1 | sed -n 's/^  \(-[a-zA-Z0-9-]*\).*/\1/p')
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
		return
	fi
	COMPREPLY=($(compgen -f -- "$cur"))
}
complete -o filenames -F _vigil vigil
`

const zshCompletion = `#compdef vigil
# zsh completion for vigil (vigil completion zsh)
_vigil() {
	if (( CURRENT == 2 )); then
		compadd -- %s --version help
		return
	fi
	local cmd=${words[2]}
	case $cmd in
	config) (( CURRENT == 3 )) && { compadd print; return } ;;
	completion) compadd bash zsh; return ;;
	esac
	if [[ ${words[CURRENT]} == -* ]]; then
		compadd -- ${(f)"$(vigil $cmd -h 2>&1 | sed -n 's/^  \(-[a-zA-Z0-9-]*\).*/\1/p')"}
		return
	fi
	_files
}
compdef _vigil vigil
`
