package watch

import (
	"golang.org/x/sys/unix"
)

// TerminalSize returns a Size function for Options that asks the terminal
// on file descriptor fd for its size; it reports 0×0 when fd is not a
// terminal.
func TerminalSize(fd int) func() (cols, lines int) {
	return func() (int, int) {
		ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
		if err != nil {
			return 0, 0
		}
		return int(ws.Col), int(ws.Row)
	}
}

// IsTerminal reports whether fd is a terminal.
func IsTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// KeysMode puts the terminal on fd into a mode where single key presses
// reach the program unechoed (canonical input and echo off) and returns a
// function that restores the terminal.
func KeysMode(fd int) (restore func(), err error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old
	raw.Lflag &^= unix.ICANON | unix.ECHO
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
