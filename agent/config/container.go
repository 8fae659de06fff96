package config

// Container holds the settings of a kind: container unit. (Filled in by the
// container work; this minimal form keeps the loader compiling.)
type Container struct {
	Image string `yaml:"image"`
}

func (c *Container) validate(path string) error {
	if c.Image == "" {
		return fieldErr(path+".image", "is required")
	}
	return nil
}
