package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/vigil-edge/vigil/agent/config"
)

// systemConfig is the config `vigil run` and `vigil config print` read when
// neither --config nor VIGIL_CONFIG names one and the file exists (the
// packages install it). A variable so that tests can point it elsewhere.
var systemConfig = "/etc/vigil/vigil.yaml"

// defaultConfigFile is --config's default: VIGIL_CONFIG, else systemConfig
// when it exists, else "" (built-in defaults only).
func defaultConfigFile() string {
	if v := os.Getenv("VIGIL_CONFIG"); v != "" {
		return v
	}
	if _, err := os.Stat(systemConfig); err == nil {
		return systemConfig
	}
	return ""
}

// runConfig is `vigil config print [FILE]`.
func runConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	usage := func() {
		fmt.Fprintf(stderr, "usage: vigil config print [FILE]\n\n"+
			"Prints the effective configuration (defaults < FILE < VIGIL_* environment) as YAML,\n"+
			"secrets redacted. Without FILE: VIGIL_CONFIG, else %s if it exists, else the defaults.\n", systemConfig)
	}
	if len(args) == 0 || args[0] != "print" || len(args) > 2 {
		usage()
		return errUsage
	}
	path := defaultConfigFile()
	if len(args) == 2 {
		if strings.HasPrefix(args[1], "-") {
			usage()
			return errUsage
		}
		path = args[1]
	}
	var cfg *config.Config
	var err error
	if path != "" {
		cfg, err = config.Load(path, envLookup)
	} else {
		cfg, err = config.Parse(nil, ".", envLookup)
	}
	if err != nil {
		return err
	}
	out, err := effectiveYAML(cfg)
	if err != nil {
		return err
	}
	from := path
	if from == "" {
		from = "built-in defaults"
	}
	fmt.Fprintf(stdout, "# Effective configuration from %s and the VIGIL_* environment; secrets redacted.\n", from)
	_, err = stdout.Write(out)
	return err
}

// effectiveYAML marshals cfg with every secret redacted: the Secret fields
// marshal as "[redacted]" by themselves; passwords inside URLs
// (tcp://user:pass@host) are redacted here.
func effectiveYAML(cfg *config.Config) ([]byte, error) {
	c := *cfg
	c.MQTT.Broker = redactURL(c.MQTT.Broker)
	c.Dify.BaseURL = redactURL(c.Dify.BaseURL)
	c.Amplitude.Endpoint = redactURL(c.Amplitude.Endpoint)
	c.Sources = append([]config.Source(nil), cfg.Sources...)
	for i := range c.Sources {
		if m := c.Sources[i].MQTT; m != nil {
			cp := *m
			cp.Broker = redactURL(cp.Broker)
			c.Sources[i].MQTT = &cp
		}
	}
	out, err := yaml.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("marshal the configuration: %w", err)
	}
	return out, nil
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "redacted")
	}
	return u.String()
}
