module claude-bottle/gate

go 1.19
