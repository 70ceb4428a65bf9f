/**
 * @phalanx/gated-attention: The parameter-golf gates: AttnOutGate, SmearGate and XSA.
 *
 * Not implemented yet: its own issue fills this package.
 */
export {};
