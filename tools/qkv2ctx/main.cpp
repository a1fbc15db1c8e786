// Placeholder until the CLI lands.
#include <cstdio>
int main() { std::puts("qkv2ctx: CLI not implemented yet"); return 1; }
