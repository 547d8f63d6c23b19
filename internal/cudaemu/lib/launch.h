// Runs one kernel over its whole grid, serially, in a shuffled order.
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "emu.h"

LWEMU_TLS lwemu_dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace lwemu {

template <typename T>
int check_arg(const lw_emu_launch *, const char *, int, T) { return 0; }
template <typename T>
int check_arg(const lw_emu_launch *l, const char *name, int i, T *p) {
	return l->check(l->ctx, (uintptr_t)p, name, i);
}

// An order of 0..n-1: i -> (a*i + c) mod n with a coprime to n.
struct perm {
	uint64_t n, a, c;
	perm(uint64_t n_, uint64_t seed) : n(n_), a(1), c(0) {
		if (n < 2) return;
		c = seed % n;
		a = (seed >> 17) % n | 1;
		while (gcd(a, n) != 1) a += 2;
		a %= n;
		if (a == 0) a = 1;
	}
	static uint64_t gcd(uint64_t x, uint64_t y) {
		while (y) {
			uint64_t t = x % y;
			x = y;
			y = t;
		}
		return x;
	}
	uint64_t operator()(uint64_t i) const { return n < 2 ? i : (a * i + c) % n; }
};

template <typename... A, std::size_t... I>
int run(void (*f)(A...), const char *name, void **p, const lw_emu_launch *l, std::index_sequence<I...>) {
	int bad = 0;
	((bad = bad ? bad : check_arg(l, name, (int)I, *static_cast<std::remove_reference_t<A> *>(p[I]))), ...);
	if (bad) return bad;
	gridDim = {l->grid[0], l->grid[1], l->grid[2]};
	blockDim = {l->block[0], l->block[1], l->block[2]};
	uint64_t nb = (uint64_t)l->grid[0] * l->grid[1] * l->grid[2];
	uint64_t nt = (uint64_t)l->block[0] * l->block[1] * l->block[2];
	perm pb(nb, l->seed), pt(nt, l->seed * 0x9e3779b97f4a7c15ull + 7);
	for (uint64_t i = 0; i < nb; i++) {
		uint64_t b = pb(i);
		blockIdx = {(unsigned)(b % l->grid[0]), (unsigned)(b / l->grid[0] % l->grid[1]), (unsigned)(b / l->grid[0] / l->grid[1])};
		for (uint64_t j = 0; j < nt; j++) {
			uint64_t t = pt(j);
			threadIdx = {(unsigned)(t % l->block[0]), (unsigned)(t / l->block[0] % l->block[1]), (unsigned)(t / l->block[0] / l->block[1])};
			f(*static_cast<std::remove_reference_t<A> *>(p[I])...);
		}
	}
	return 0;
}

template <typename... A>
int launch(void (*f)(A...), const char *name, void **p, const lw_emu_launch *l) {
	return run(f, name, p, l, std::index_sequence_for<A...>{});
}

} // namespace lwemu
