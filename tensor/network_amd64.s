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

// func axpy8(dst *float64, x *float32, w float64, n int)
//
// For each i < n (a multiple of 8): dst[i] += w * float64(x[i]), two
// elements a register: CVTPS2PD widens two floats, MULPD and ADDPD round
// each lane as MULSD and ADDSD would, so the result is axpy's bit for bit.
TEXT ·axpy8(SB), NOSPLIT, $0-32
	MOVQ     dst+0(FP), DI
	MOVQ     x+8(FP), SI
	MOVSD    w+16(FP), X7
	UNPCKLPD X7, X7
	MOVQ     n+24(FP), CX
	SHRQ     $3, CX
	JZ       axpydone

axpyloop:
	CVTPS2PD (SI), X0
	CVTPS2PD 8(SI), X1
	CVTPS2PD 16(SI), X2
	CVTPS2PD 24(SI), X3
	MULPD    X7, X0
	MULPD    X7, X1
	MULPD    X7, X2
	MULPD    X7, X3
	MOVUPD   (DI), X4
	MOVUPD   16(DI), X5
	MOVUPD   32(DI), X6
	MOVUPD   48(DI), X8
	ADDPD    X4, X0
	ADDPD    X5, X1
	ADDPD    X6, X2
	ADDPD    X8, X3
	MOVUPD   X0, (DI)
	MOVUPD   X1, 16(DI)
	MOVUPD   X2, 32(DI)
	MOVUPD   X3, 48(DI)
	ADDQ     $32, SI
	ADDQ     $64, DI
	DECQ     CX
	JNZ      axpyloop

axpydone:
	RET

// func scale8(dst *float64, x *float32, w float64, n int)
//
// For each i < n (a multiple of 8): dst[i] = w * float64(x[i]), as axpy8.
TEXT ·scale8(SB), NOSPLIT, $0-32
	MOVQ     dst+0(FP), DI
	MOVQ     x+8(FP), SI
	MOVSD    w+16(FP), X7
	UNPCKLPD X7, X7
	MOVQ     n+24(FP), CX
	SHRQ     $3, CX
	JZ       scaledone

scaleloop:
	CVTPS2PD (SI), X0
	CVTPS2PD 8(SI), X1
	CVTPS2PD 16(SI), X2
	CVTPS2PD 24(SI), X3
	MULPD    X7, X0
	MULPD    X7, X1
	MULPD    X7, X2
	MULPD    X7, X3
	MOVUPD   X0, (DI)
	MOVUPD   X1, 16(DI)
	MOVUPD   X2, 32(DI)
	MOVUPD   X3, 48(DI)
	ADDQ     $32, SI
	ADDQ     $64, DI
	DECQ     CX
	JNZ      scaleloop

scaledone:
	RET
