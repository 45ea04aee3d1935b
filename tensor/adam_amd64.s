#include "textflag.h"

// func adamStep4(out, stOut, stIn *float32, sums *float64, base *float32, n int, c, b1, b2, ob1, ob2 float64, eta, tau float32) bool
//
// fedadam's step (adamStepGo) four elements a turn, with the same
// roundings: every float64 operation of the Go loop is one lane of a
// MULPD, ADDPD or SUBPD, every float32 one a lane of a MULPS, ADDPS, DIVPS
// or SQRTPS (the float32 square root through float64 that the Go loop
// takes is the correctly rounded one SQRTPS gives), and every conversion a
// CVTPS2PD or CVTPD2PS.
//
// m and v are updated where they lie interleaved: CVTPS2PD widens an
// element's (m, v) to one register, which is multiplied by (β1, β2) and
// added to (1−β1, 1−β2)·(Δ, Δ²); CVTPD2PS and MOVLHPS put two elements'
// new (m, v) back side by side as stOut holds them. SHUFPS then gathers
// the four m and the four v for the float32 step.
//
// Finiteness is kept as in the Go loop, without a branch: a lane whose
// exponent bits are all ones (PCMPEQL against the mask) sets all of its
// bits in X14, whose sign bits MOVMSKPS reads at the end.
//
// Registers: X0, X1 the model's x as float64, X2–X7 scratch, X8 (c, c),
// X9 (β1, β2), X10 (1−β1, 1−β2), X11 η and X12 τ in every lane, X13 the
// exponent mask, X14 the finiteness flags.
TEXT ·adamStep4(SB), NOSPLIT, $0-97
	MOVQ      out+0(FP), DI
	MOVQ      stOut+8(FP), R8
	MOVQ      stIn+16(FP), SI
	MOVQ      sums+24(FP), DX
	MOVQ      base+32(FP), BX
	MOVQ      n+40(FP), CX
	MOVSD     c+48(FP), X8
	UNPCKLPD  X8, X8
	MOVSD     b1+56(FP), X9
	MOVSD     b2+64(FP), X0
	UNPCKLPD  X0, X9
	MOVSD     ob1+72(FP), X10
	MOVSD     ob2+80(FP), X0
	UNPCKLPD  X0, X10
	MOVSS     eta+88(FP), X11
	SHUFPS    $0, X11, X11
	MOVSS     tau+92(FP), X12
	SHUFPS    $0, X12, X12
	MOVL      $0x7f800000, AX
	MOVL      AX, X13
	SHUFPS    $0, X13, X13
	PXOR      X14, X14
	SHRQ      $2, CX
	JZ        adamdone

adamloop:
	// Δ = s − c·x for elements 0, 1 (X2) and 2, 3 (X3).
	CVTPS2PD  (BX), X0
	CVTPS2PD  8(BX), X1
	MOVUPD    (DX), X2
	MOVUPD    16(DX), X3
	MOVAPD    X0, X4
	MULPD     X8, X4
	SUBPD     X4, X2
	MOVAPD    X1, X5
	MULPD     X8, X5
	SUBPD     X5, X3

	// Elements 0 and 1: (Δ, Δ²) each, then (m, v) = (β1, β2)·(m, v) +
	// (1−β1, 1−β2)·(Δ, Δ²), rounded to float32, into X4.
	MOVAPD    X2, X4
	MULPD     X4, X4
	MOVAPD    X2, X5
	UNPCKLPD  X4, X5
	UNPCKHPD  X4, X2
	MULPD     X10, X5
	MULPD     X10, X2
	CVTPS2PD  (SI), X4
	CVTPS2PD  8(SI), X6
	MULPD     X9, X4
	MULPD     X9, X6
	ADDPD     X5, X4
	ADDPD     X2, X6
	CVTPD2PS  X4, X4
	CVTPD2PS  X6, X6
	MOVLHPS   X6, X4

	// Elements 2 and 3 likewise, into X5.
	MOVAPD    X3, X5
	MULPD     X5, X5
	MOVAPD    X3, X6
	UNPCKLPD  X5, X6
	UNPCKHPD  X5, X3
	MULPD     X10, X6
	MULPD     X10, X3
	CVTPS2PD  16(SI), X5
	CVTPS2PD  24(SI), X7
	MULPD     X9, X5
	MULPD     X9, X7
	ADDPD     X6, X5
	ADDPD     X3, X7
	CVTPD2PS  X5, X5
	CVTPD2PS  X7, X7
	MOVLHPS   X7, X5

	MOVUPS    X4, (R8)
	MOVUPS    X5, 16(R8)
	MOVAPS    X4, X2
	ANDPS     X13, X2
	PCMPEQL   X13, X2
	POR       X2, X14
	MOVAPS    X5, X3
	ANDPS     X13, X3
	PCMPEQL   X13, X3
	POR       X3, X14

	// m in X2, v in X4; the step η·m/(√v + τ) in float32, in X2.
	MOVAPS    X4, X2
	SHUFPS    $0x88, X5, X2
	SHUFPS    $0xDD, X5, X4
	SQRTPS    X4, X4
	ADDPS     X12, X4
	MULPS     X11, X2
	DIVPS     X4, X2

	// out = float32(x + float64(step)).
	CVTPS2PD  X2, X3
	MOVHLPS   X2, X2
	CVTPS2PD  X2, X2
	ADDPD     X0, X3
	ADDPD     X1, X2
	CVTPD2PS  X3, X3
	CVTPD2PS  X2, X2
	MOVLHPS   X2, X3
	MOVUPS    X3, (DI)
	ANDPS     X13, X3
	PCMPEQL   X13, X3
	POR       X3, X14

	ADDQ      $16, DI
	ADDQ      $32, R8
	ADDQ      $32, SI
	ADDQ      $32, DX
	ADDQ      $16, BX
	DECQ      CX
	JNZ       adamloop

adamdone:
	MOVMSKPS  X14, AX
	TESTL     AX, AX
	SETNE     ret+96(FP)
	RET
