// Type declarations for web/bnlab.mjs, the JavaScript bridge to bnlab.wasm.
// Every method throws `Error` (message starting with "bnlab: ") on bad input; the instance stays usable.
// Activations are NHWC float32; BatchNorm momentum follows Flax: running = momentum * running + (1 - momentum) * batch.

/** Float data accepted as input: a Float32Array, or any array / typed array of numbers (converted). */
export type FloatInput = Float32Array | ArrayLike<number>;

/** NHWC shape `[n, h, w, c]` of positive integers. */
export type Shape4 = [n: number, h: number, w: number, c: number] | readonly [number, number, number, number];

/** The kernel sets the core can run. The wasm build has `scalar` and `wasmsimd` (default). */
export declare const ISA: Readonly<{ scalar: 0; avx2: 1; avx512: 2; wasmsimd: 3 }>;
export type IsaName = keyof typeof ISA;

export interface CreateBnLabOptions {
  /** The bytes of bnlab.wasm; default: fetched (or read, in Node) from beside bnlab.mjs. */
  wasmBytes?: BufferSource;
  /**
   * Threads for the parallel loops: 1 = the single-thread build (bnlab.wasm), N > 1 = the threaded
   * build (threads/bnlab-threads.*) on N threads. Default: `os.availableParallelism()` in Node,
   * `navigator.hardwareConcurrency` in a Web Worker of a cross-origin-isolated page, else 1 (and 1
   * when only `wasmBytes` is given). A page must call a threaded lab from a Web Worker.
   */
  threads?: number;
  /** The build, explicitly: 'simd' or 'simd-threads' (the threaded build may also run on 1 thread). */
  build?: 'simd' | 'simd-threads';
  /** The bytes of threads/bnlab-threads.wasm; default: fetched (or read) from there. */
  threadsWasmBytes?: BufferSource;
  /**
   * true: the relaxed-SIMD files (bnlab-relaxed.wasm, threads/bnlab-threads-relaxed.*: the GEMM
   * kernel's multiply-add as f32x4.relaxed_madd, an FMA where the CPU has one); throws where the
   * engine does not run relaxed SIMD. false: the plain simd128 files. Default: relaxed where the
   * engine runs it (Chromium; Node 20 with --experimental-wasm-relaxed-simd), falling back to the
   * plain files with a warning if the relaxed ones cannot be loaded.
   */
  relaxed?: boolean;
}

/** Loads and instantiates bnlab.wasm (or the threaded build). */
export declare function createBnLab(options?: CreateBnLabOptions): Promise<BnLab>;
/** Whether this engine runs relaxed SIMD (validates a module holding one f32x4.relaxed_madd). */
export declare function relaxedSimdSupported(): boolean;

export interface BnLab {
  /** Loads a safetensors state dict with torchvision ResNet names (F32/F16/BF16); the architecture is read from it. */
  loadModel(bytes: Uint8Array | ArrayBuffer): Model;
  /** The active kernel set, e.g. "wasmsimd" or "scalar". */
  readonly isa: string;
  /** Forces a kernel set (throws when it is not available in this build). */
  forceIsa(name: IsaName): void;
  /** Back to the best available kernel set. */
  resetIsa(): void;
  /** Bytes of wasm linear memory (it grows, never shrinks). */
  readonly memoryBytes: number;
  /** BatchNorm on its own, on an NHWC activation viewed as (M = N*H*W, C). */
  readonly batchNorm: BatchNormOps;
  /** Threads the parallel loops run on. */
  readonly threads: number;
  /** 'simd' (bnlab.wasm, one thread) or 'simd-threads' (the same core on pthreads). */
  readonly build: 'simd' | 'simd-threads';
  /** The relaxed-SIMD files run (the GEMM kernel uses f32x4.relaxed_madd). */
  readonly relaxed: boolean;
  /** The GEMM micro-kernel the module runs: 'gemm_4x8__wasmsimd' or 'gemm_4x8__wasmrelaxed'. */
  readonly kernel: string;
  /** The threaded build: ends its worker threads; the lab is unusable afterwards (no-op for 'simd'). */
  terminate(): void;
}

/** Options of the stand-alone BatchNorm ops. */
export interface BatchNormOptions {
  /** Scale, length C (default all 1). */
  gamma?: FloatInput;
  /** Shift, length C (default all 0). */
  beta?: FloatInput;
  /** Default 1e-5. */
  eps?: number;
  /** Flax convention, default 0.9: running = momentum * running + (1 - momentum) * batch. */
  momentum?: number;
  /** Update running_var with the unbiased batch variance (PyTorch's rule; default biased). */
  unbiased?: boolean;
  /** Running statistics as a cumulative average (PyTorch momentum=None). */
  cumulative?: boolean;
  /** Fuse a ReLU after the normalization. */
  relu?: boolean;
  /** false: no gamma (scale 1). Default true. */
  useScale?: boolean;
  /** false: no beta (shift 0). Default true. */
  useBias?: boolean;
  /** Running mean in, length C (default 0). */
  runningMean?: FloatInput;
  /** Running variance in, length C (default 1). */
  runningVar?: FloatInput;
  /** Batches seen so far (for `cumulative`), default 0. */
  numBatchesTracked?: number;
}

export interface BatchNormTrainResult {
  /** Normalized output, M*C. */
  y: Float32Array;
  /** Batch mean per channel. */
  mean: Float32Array;
  /** Biased batch variance per channel. */
  var: Float32Array;
  /** 1 / sqrt(var + eps) per channel (what backwardTrain needs). */
  invstd: Float32Array;
  /** Updated running mean. */
  runningMean: Float32Array;
  /** Updated running variance. */
  runningVar: Float32Array;
  numBatchesTracked: number;
}

export interface BatchNormGrads {
  dx: Float32Array;
  dgamma: Float32Array;
  dbeta: Float32Array;
}

export interface BatchNormOps {
  /** Train mode: normalizes with the batch statistics and updates the running ones. */
  forwardTrain(x: FloatInput, M: number, C: number, options?: BatchNormOptions): BatchNormTrainResult;
  /** Eval mode: normalizes with the running statistics (never changes them). Returns y, M*C. */
  forwardEval(x: FloatInput, M: number, C: number, options?: BatchNormOptions): Float32Array;
  /** Gradients of a train-mode forward; `saved` is its result (mean and invstd). */
  backwardTrain(dy: FloatInput, x: FloatInput, saved: { mean: FloatInput; invstd: FloatInput }, M: number, C: number,
    options?: BatchNormOptions): BatchNormGrads;
  /** Gradients of an eval-mode forward (the running statistics are constants). */
  backwardEval(dy: FloatInput, x: FloatInput, M: number, C: number, options?: BatchNormOptions): BatchNormGrads;
}

/** The architecture read from the weights file, plus `__metadata__` entries when present. */
export interface ModelInfo {
  /** Blocks per stage, e.g. [3, 4, 6, 3] for ResNet-50. */
  readonly blocks: number[];
  /** Output channels of each stage. */
  readonly widths: number[];
  readonly block: 'basic' | 'bottleneck';
  /** Channels of conv1 / bn1. */
  readonly stemWidth: number;
  /** Input channels (3). */
  readonly inChannels: number;
  readonly numClasses: number;
  /** Features into fc. */
  readonly numFeatures: number;
  /** Trainable parameters (conv, BN gamma/beta, fc). */
  readonly numParams: number;
  /** Every BatchNorm layer, torchvision names in module order: "bn1", "layer1.0.bn1", ..., "layer1.0.downsample.1", ... */
  readonly bnLayers: string[];
  /**
   * Class names: `__metadata__.labels` (a JSON array of one name per class), else the 1000 ImageNet names for a
   * 1000-class model, else undefined (classes are numbered).
   */
  readonly labels?: readonly string[];
  /** Per-channel RGB mean the inputs were normalized with: `__metadata__.mean`, else ImageNet's. */
  readonly mean: [number, number, number];
  /** Per-channel RGB std: `__metadata__.std`, else ImageNet's. */
  readonly std: [number, number, number];
  /**
   * [3, H, W] the model expects: `__metadata__.input_size` (timm's convention; a bare N means N x N), else
   * [3, 224, 224] for a 1000-class (ImageNet) model, else `train.image-size`, else [3, 64, 64].
   */
  readonly inputSize: [number, number, number];
  /** The data it was trained on: `__metadata__["train.data"]` ('procedural', 'fashion-mnist', ...), 'imagenet' assumed for 1000 classes, else null. */
  readonly trainData: string | null;
  /**
   * For each of inputSize, mean, std, labels, trainData: read from the file or assumed, why, and `problem` when the
   * file's value was malformed (then ignored, as if absent; the model still loads).
   */
  readonly provenance: Record<'inputSize' | 'mean' | 'std' | 'labels' | 'trainData', CardSource>;
  /**
   * 'batch': BatchNorm. 'none': a network trained without normalization (`bnlab train --norm none`,
   * `__metadata__` "bnlab.norm": "none"): every BatchNorm layer is a per-channel scale and shift, train and eval
   * mode compute the same function, running statistics are neither used nor updated, bnStats has no batch.
   * 'group:G': GroupNorm (statistics per image and group; train and eval the same; no running statistics, bnStats
   * has no batch; normStats gives the per-image group statistics). 'renorm': Batch Renormalization (normStats: r, d).
   * 'ghost:V': Ghost BatchNorm (bnStats' batch = the virtual batches' average; normStats: each virtual batch's).
   * 'frozen': BatchNorm with the running statistics in training too (never updated; bnStats has no batch).
   */
  readonly norm: 'batch' | 'none' | 'renorm' | 'frozen' | `group:${number}` | `ghost:${number}`;
  /** Renorm's clipping bounds (`bnlab.renorm_rmax`, `bnlab.renorm_dmax`; defaults 3 and 5). Only when norm is 'renorm'. */
  readonly renorm?: { readonly rmax: number; readonly dmax: number };
}

/** A GroupNorm, Renorm or Ghost layer's own statistics of the last forward (see Model.normStats). */
export type NormStats =
  | { layer: string; kind: 'group'; images: number; groups: number; groupMean: Float32Array; groupVar: Float32Array }
  | { layer: string; kind: 'renorm'; channels: number; r: Float32Array; d: Float32Array }
  | { layer: string; kind: 'ghost'; virtualBatches: number; channels: number; virtualMean: Float32Array;
      virtualVar: Float32Array };

/** Where a model card value came from. */
export interface CardSource {
  readonly from: 'file' | 'assumed';
  readonly why: string;
  readonly problem?: string;
}

/** What a BatchNorm layer used and holds. */
export interface BnStats {
  readonly layer: string;
  readonly channels: number;
  /** Batch mean of the layer's input in the last train-mode forward; null before any. */
  readonly batchMean: Float32Array | null;
  /** Biased batch variance of the layer's input in the last train-mode forward; null before any. */
  readonly batchVar: Float32Array | null;
  readonly runningMean: Float32Array;
  readonly runningVar: Float32Array;
  readonly numBatchesTracked: number;
}

/** BatchNorm settings for every layer of a model. */
export interface ModelBatchNormOptions {
  /** Flax convention, default 0.9 (PyTorch momentum 0.1). */
  momentum?: number;
  /** Default 1e-5. */
  eps?: number;
  /** Update running_var with the unbiased batch variance (PyTorch's rule). Default false (biased, as Flax). */
  unbiased?: boolean;
  /** Running statistics as a cumulative average (PyTorch momentum=None). */
  cumulative?: boolean;
}

/** One SGD step's settings (PyTorch's SGD semantics). */
export interface StepOptions {
  /** Learning rate, default 0.1. */
  lr?: number;
  /** SGD momentum, default 0 (plain SGD). */
  momentum?: number;
  /** L2 weight decay on every parameter, default 0. */
  weightDecay?: number;
  nesterov?: boolean;
}

/** A loaded ResNet. One train()/eval() switch for every BatchNorm layer, like nnx. Starts in eval mode. */
export interface Model {
  readonly info: ModelInfo;
  /** True after train(), false after eval() (and after loading). */
  readonly training: boolean;
  train(): this;
  eval(): this;
  setBatchNorm(options?: ModelBatchNormOptions): void;
  /** x: NHWC float32 of `shape`; returns the logits, Float32Array [n * numClasses]. Train mode updates running stats. */
  forward(x: FloatInput, shape: Shape4): Float32Array;
  /**
   * Train mode only: the forward up to BatchNorm layer `layer` (name or index), returning its
   * bnStats(). Layers up to it get exactly a full forward's statistics; later layers keep theirs.
   */
  forwardTo(x: FloatInput, shape: Shape4, layer: string | number): BnStats;
  /** Statistics of one BatchNorm layer, by name (see info.bnLayers) or index. */
  bnStats(layer: string | number): BnStats;
  /** Train mode: the forward up to the input of BatchNorm `layer` (which does not run); channel `channel`
   * of that input (the convolution's output before BatchNorm, N*H*W values), that channel's gamma and beta, and eps. */
  bnInput(x: Float32Array, shape: [number, number, number, number], layer: string | number, channel: number):
    { values: Float32Array; gamma: number; beta: number; eps: number };
  /** Train mode: a whole forward (its logits) that also returns what bnInput gives for (layer, channel), bit for bit. */
  forwardBnInput(x: Float32Array, shape: [number, number, number, number], layer: string | number, channel: number):
    { logits: Float32Array; input: { values: Float32Array; gamma: number; beta: number; eps: number } };
  /**
   * Replaces one layer's running statistics (channels values each; finite, variance >= 0). Throws, changing nothing,
   * on a wrong count or value or a kind without running statistics ('none', 'group').
   */
  setRunningStats(layer: string | number, stats: { mean: FloatInput; variance: FloatInput }): void;
  /**
   * PreciseBN: every layer's running statistics become the exact mean and pooled (biased) variance over all the
   * batches' activations (one train-mode forward each; nothing moves until the end). Same H x W in every batch;
   * plain BatchNorm only.
   */
  preciseBN(batches: Iterable<{ x: FloatInput; shape: Shape4 }>): void;
  /** The same, a batch at a time: add(x, shape) ..., then end() (sets the statistics) or dispose(). */
  preciseBNBegin(): PreciseBNAccumulator;
  /**
   * GroupNorm's per-image group statistics (from the last forward, either mode), Renorm's r and d or Ghost's per-virtual-
   * batch statistics (from the last train-mode forward); null for other kinds or before such a forward.
   */
  normStats(layer: string | number): NormStats | null;
  /** One SGD step in train mode (softmax cross-entropy, mean over the batch); returns the loss. Labels in [0, numClasses). */
  step(x: FloatInput, shape: Shape4, labels: ArrayLike<number | bigint>, options?: StepOptions): number;
  /** The whole state as safetensors bytes, in the loaded file's names and layouts. */
  saveState(): Uint8Array;
  /**
   * A second context over this model's state: the same weights and running statistics in memory (an update through
   * either is seen by both), its own train/eval switch (eval to start), batch statistics and buffers. Its train-mode
   * forwards never move the shared running statistics. Dispose each; the weights go with the last.
   */
  cloneContext(): Model;
  /** Moves with every write to the weights or running statistics (through this handle or a clone), and only then. */
  readonly stateVersion: number;
  /** Frees the wasm memory of this model; any later use throws. Calling it again is harmless. */
  dispose(): void;
}

// ================================================================================================
// Procedural dataset (src/io/dataset.h): shapes drawn on demand, image i depending only on (seed, i).
// ================================================================================================
export interface ProceduralOptions {
  /** Default 1; use different seeds for different splits. */
  seed?: number;
  /** Number of images, default 10000 (nothing is stored). */
  count?: number;
  /** 2..16, default 10. */
  classes?: number;
  /** Images are size x size, size >= 8, default 32. */
  size?: number;
}

export interface ProceduralDataset {
  readonly count: number;
  readonly classes: number;
  readonly height: number;
  readonly width: number;
  /** "circle", "square", ... */
  readonly classNames: string[];
  /** n images from `start` (wrapping around), NHWC, normalized with the dataset's mean/std; labels per image. */
  batch(start: number, n: number, options?: { augment?: boolean; seed?: number }): { x: Float32Array; labels: Int32Array };
  /** The same for explicit image indices (each in [0, count)). */
  batchIndices(indices: ArrayLike<number>, options?: { augment?: boolean; seed?: number }): { x: Float32Array; labels: Int32Array };
  /** Image i as (H,W,3) bytes, un-normalized and un-augmented. */
  image(i: number): Uint8Array;
  /** Class of image i (-1 when out of range). */
  label(i: number): number;
  /** Frees its wasm memory; any later use throws. */
  dispose(): void;
}

// ================================================================================================
// IDX datasets (MNIST, Fashion-MNIST; src/io/dataset_idx.c).
// ================================================================================================
export interface IdxOptions {
  /** Take size (input_size [3,S,S]), mean and std from this model's metadata (explicit options win). */
  model?: { info: ModelInfoLike };
  /** Samples are S x S: 0 = the files' own (28), up to 4 more zero-padded (32), larger resized. */
  size?: number;
  /** Normalization (3 numbers each); default: the model's, else the data's own mean/std. */
  mean?: ArrayLike<number>;
  std?: ArrayLike<number>;
  /** Fashion-MNIST's class names (T-shirt/top ... Ankle boot); labels must be 0..9. Default: "0", "1", ... */
  fashionMnist?: boolean;
  /** Names to show instead (at least as many as classes). */
  classNames?: string[];
  /** Names used in error messages (default "images file", "labels file"). */
  imagesName?: string;
  labelsName?: string;
}

/** The parts of Model.info that loadIdxDataset reads. */
export interface ModelInfoLike {
  inputSize?: number[];
  mean?: number[];
  std?: number[];
}

export interface IdxDataset extends ProceduralDataset {
  /** The normalization every batch uses (per channel). */
  readonly mean: number[];
  readonly std: number[];
  /**
   * n images in the order of the permutation drawn from (seed, epoch) (the native
   * bnl_dataset_permutation), from position start on; augment draws the training augmentation from seed.
   */
  randomBatch(n: number, options?: { seed?: number; epoch?: number; start?: number; augment?: boolean }):
    { x: Float32Array; labels: Int32Array; indices: Int32Array };
}

export interface BnLab {
  /** A deterministic procedural image dataset in wasm (the same images as the native build). */
  procedural(options?: ProceduralOptions): ProceduralDataset;
  /**
   * An IDX dataset from the images and labels files' bytes, gzip'd (inflated with DecompressionStream)
   * or plain. Rejects with an Error naming the file for truncated/corrupt data, a wrong magic number,
   * or image and label counts that disagree.
   */
  loadIdxDataset(images: Uint8Array | ArrayBuffer, labels: Uint8Array | ArrayBuffer, options?: IdxOptions): Promise<IdxDataset>;
  /**
   * A permutation of 0..n-1 drawn from (seed, epoch), the same as the native bnl_dataset_permutation
   * (bnlab train's subsets: seed = --data-seed, epoch 1 for --train-size, 2 for --val-size).
   */
  permutation(n: number, options?: { seed?: number; epoch?: number }): Int32Array;
}

export interface PreciseBNAccumulator {
  readonly batches: number;
  add(x: FloatInput, shape: Shape4): void;
  /** Sets the running statistics and frees the accumulator; throws if no batch was added. */
  end(): void;
  dispose(): void;
}
