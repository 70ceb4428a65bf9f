import { debug } from '@phalanx/core';
import { disposeTestBackends } from '@phalanx/webgpu/testing';
import { afterAll } from 'vitest';

// Every test runs with fresh allocations poisoned, so a kernel that leaves an element unwritten fails.
debug.poison = true;

afterAll(() => disposeTestBackends());
