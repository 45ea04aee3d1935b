#include "textflag.h"

// func minMax8(a, b *float32, n int)
//
// For each i < n (a multiple of 8): a[i] = a[i] < b[i] ? a[i] : b[i] and
// b[i] = a[i] > b[i] ? a[i] : b[i], eight floats a turn in two SSE
// registers. MINPS X2, X0 sets X0 to X0 < X2 ? X0 : X2.
TEXT ·minMax8(SB), NOSPLIT, $0-24
	MOVQ a+0(FP), DI
	MOVQ b+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $3, CX
	JZ   done

loop:
	MOVUPS (DI), X0
	MOVUPS 16(DI), X1
	MOVUPS (SI), X2
	MOVUPS 16(SI), X3
	MOVAPS X0, X4
	MOVAPS X1, X5
	MINPS  X2, X0
	MINPS  X3, X1
	MAXPS  X2, X4
	MAXPS  X3, X5
	MOVUPS X0, (DI)
	MOVUPS X1, 16(DI)
	MOVUPS X4, (SI)
	MOVUPS X5, 16(SI)
	ADDQ   $32, DI
	ADDQ   $32, SI
	DECQ   CX
	JNZ    loop

done:
	RET
