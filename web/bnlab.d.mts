// TypeScript resolves declarations of ./bnlab.mjs from this file.
export * from './bnlab.js';
