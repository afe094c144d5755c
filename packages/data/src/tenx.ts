/**
 * Readers for 10x Genomics Cell Ranger output: the HDF5 feature-barcode matrix (lazy, block-wise)
 * and the MEX folder (matrix.mtx.gz + features.tsv.gz + barcodes.tsv.gz, loaded at open).
 * Both expose cells (barcodes) as rows and features as columns; var index = feature ids.
 */
export { openTenxH5 } from "./tenx/h5.js";
export { openTenxMex, isTenxMexDir } from "./tenx/mex.js";
