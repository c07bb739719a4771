# Cephalometric landmarks on lateral face photographs: HRNetV2-W18, top-down heatmaps (MMPose).
#
# The recipe. train_cephalometric.py loads it, fills in what depends on the prepared data (number
# of landmarks, data_root) and applies its options (--epochs, --lr, --input-size, ...), which set
# every place a named setting below is used. Any other value: --cfg-options key=value.
# - HRNetV2-W18 keeps a high-resolution branch throughout: what sub-pixel landmarks need.
# - Fine-tuned from OpenMMLab's AFLW face-landmark checkpoint (faces, 19 heatmaps): backbone and
#   head load whole, so training starts from face features.
# - No `import` statements: MMEngine then applies `custom_imports` (package modules only).
# This file is code (MMEngine executes a config): pass only configs you trust with --config.

# ----------------------------------------------------------------------------------------------
# Named settings (read when the file loads; the options of train_cephalometric.py change them
# everywhere they are used, --cfg-options on these names is refused).
max_epochs = 100        # --epochs; the step decay and the framing model scale with it
base_lr = 1e-3          # --lr; Adam, for 32 images per step
warmup_iters = 200      # --warmup-iters; linear ramp so the pretrained head is not wrecked
train_batch_size = 32   # --batch-size (per process)
val_batch_size = 32
num_workers = 2         # --workers (per process; 0: load in the training process)
input_size = (256, 256)     # --input-size; the AFLW model's
heatmap_size = (64, 64)     # stride 4
sigma = 2                   # --sigma; heatmap Gaussian, in heatmap pixels
framing_epochs = 30         # --framing-epochs; the framing model's fine-tuning (0: none)
refine_epochs = 30          # --refine-epochs; the refinement model's fine-tuning (0: none)
refine_input_size = 64      # px; the refinement model's patch around each landmark

custom_imports = dict(
    # mmcv_compat first: it lets mmpose import on mmcv-lite (no compiled ops).
    imports=['cephalometric.mmpose_plugins.mmcv_compat', 'cephalometric.mmpose_plugins.dataset',
             'cephalometric.mmpose_plugins.metric', 'cephalometric.mmpose_plugins.transforms',
             'cephalometric.training.hooks'],
    allow_failed_imports=False)

default_scope = 'mmpose'

# ----------------------------------------------------------------------------------------------
# Data. Produced by `prepare_cephalometric_data.py`; metainfo.json in data_root names the landmarks.
data_root = 'data/cephalometric/'
# Number of landmarks. train_cephalometric.py sets it from <data_root>/metainfo.json, so another
# landmark set (ISBI 2015, a 38-point set) works without editing this file.
num_keypoints = 19

# ----------------------------------------------------------------------------------------------
# Schedule: validation (MRE) after every epoch.
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# Adam, linear warm-up, then a 10x step decay at 70% and 90% to settle on sub-pixel positions.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=base_lr))
param_scheduler = [
    dict(type='LinearLR', begin=0, end=warmup_iters, start_factor=0.001, by_epoch=False),
    dict(type='MultiStepLR', begin=0, end=max_epochs,
         milestones=[int(max_epochs * 0.7), int(max_epochs * 0.9)], gamma=0.1, by_epoch=True),
]
# With several processes a step sees processes x batch_size images; --auto-scale-lr scales lr by
# that total / base_batch_size (the linear scaling rule).
auto_scale_lr = dict(base_batch_size=32, enable=False)

# ----------------------------------------------------------------------------------------------
# Heatmap codec. unbiased=True is DARK decoding: sub-pixel coordinates from a Taylor expansion at
# the peak (at stride 4 one heatmap pixel is 3.5 px of a 224 px photo).
codec = dict(
    type='MSRAHeatmap', input_size=input_size, heatmap_size=heatmap_size, sigma=sigma,
    unbiased=True)

# ----------------------------------------------------------------------------------------------
# Model
model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(
        type='PoseDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        type='HRNet',
        in_channels=3,
        extra=dict(
            stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK', num_blocks=(4, ),
                        num_channels=(64, )),
            stage2=dict(num_modules=1, num_branches=2, block='BASIC', num_blocks=(4, 4),
                        num_channels=(18, 36)),
            stage3=dict(num_modules=4, num_branches=3, block='BASIC', num_blocks=(4, 4, 4),
                        num_channels=(18, 36, 72)),
            stage4=dict(num_modules=3, num_branches=4, block='BASIC', num_blocks=(4, 4, 4, 4),
                        num_channels=(18, 36, 72, 144), multiscale_output=True),
            upsample=dict(mode='bilinear', align_corners=False)),
        # No ImageNet init: the whole model comes from `load_from` (or random weights with
        # --no-pretrained), and fetching a second checkpoint would break offline machines.
        init_cfg=None),
    # HRNetV2: upsample all four branches and concatenate them (18+36+72+144 = 270 channels).
    neck=dict(type='FeatureMapProcessor', concat=True),
    head=dict(
        type='HeatmapHead',
        in_channels=270,
        out_channels=num_keypoints,
        deconv_out_channels=None,
        conv_out_channels=(270, ),
        conv_kernel_sizes=(1, ),
        loss=dict(type='KeypointMSELoss', use_target_weight=True),
        decoder=codec),
    # All landmarks lie on the facial profile: there are no left/right pairs to swap, and a
    # mirrored profile is a different picture, so flip test would only blur predictions.
    test_cfg=dict(flip_test=False))

# AFLW-pretrained HRNetV2-W18 from OpenMMLab's model zoo (downloaded once, then cached by torch).
load_from = ('https://download.openmmlab.com/mmpose/face/hrnetv2/'
             'hrnetv2_w18_aflw_256x256-f2bbc62b_20210125.pth')
resume = False

# ----------------------------------------------------------------------------------------------
# Pipelines. The photograph is already a face crop: the box is the whole image with a little
# padding so augmentation rarely pushes a landmark out of view.
bbox_padding = 1.1
train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=bbox_padding),
    # Patients sit slightly differently in front of the camera: small shifts, zoom and head tilt.
    # No horizontal flip: every training face looks the same way, and mirroring would make the
    # model spend capacity on a direction it never sees.
    dict(type='RandomBBoxTransform', shift_factor=0.08, shift_prob=0.5, scale_factor=(0.85, 1.15),
         rotate_factor=15, rotate_prob=0.6),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    # Clinic lighting and skin tones vary; geometry does not change with them.
    dict(type='PhotometricDistortion', brightness_delta=24, contrast_range=(0.7, 1.3),
         saturation_range=(0.7, 1.3), hue_delta=8),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs'),
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=bbox_padding),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PackPoseInputs'),
]

# ----------------------------------------------------------------------------------------------
# Framing model: finds the face in a wider or mirrored photograph before the landmark model
# measures it (cephalometric/prediction/framing.py). After the landmark run, a copy is fine-tuned
# for `max_epochs` with `zoom_out` after LoadImage (half the crops pasted into a canvas up to 3x
# their size); both networks go into best_MRE.pth. Two networks, because one trained on both kinds
# of picture measured the crops ~15% worse (docs/inference.md).
# `flip` (off: prob 0; on: --cfg-options framing_model.flip.prob=0.5) also teaches it faces looking
# the other way (landmarks keep their names: a profile has no left/right pairs); framing then reads
# the direction from where its landmarks lie and needs no mirrored pass: 2.0x one landmark pass
# instead of 3.0x, but on real photographs it needs more epochs to frame as well (worse at 2 and 4;
# about as well at 8 on development photos, yet 2 of its 6 held-out failures went unflagged:
# docs/inference.md, Real photographs as taken).
framing_model = dict(
    max_epochs=framing_epochs,
    zoom_out=dict(type='RandomZoomOut', prob=0.5, max_ratio=3.0),
    flip=dict(type='RandomFlip', direction='horizontal', prob=0.0))

# ----------------------------------------------------------------------------------------------
# Refinement model: re-locates each landmark on a patch of the original image around the landmark
# model's estimate, at several times its resolution (cephalometric/prediction/predictor.py). After
# the landmark run a copy is fine-tuned for `max_epochs` on such patches (LandmarkPatch after
# GetBBoxCenterScale); it goes into best_MRE.pth. The patch is not a number to tune: its side is
# `patch_errors` x the landmark model's validation MRE (so it holds nearly every estimate's
# truth), and its centre is jittered by that measured error (training.config.refine_config).
refine_model = dict(
    max_epochs=refine_epochs,
    input_size=refine_input_size,
    patch_errors=8.0,
    # patches drawn per training image and epoch (each around a random landmark); a step takes
    # that many times train_batch_size patches, so an epoch has the landmark run's steps
    patches_per_image=4)

dataset_type = 'CephalometricDataset'
train_dataloader = dict(
    batch_size=train_batch_size,
    num_workers=num_workers,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/train.json',
        data_prefix=dict(img='images/'),
        # None: every training image. N: the first N only, for quick experiments and benchmark.py
        # (--cfg-options train_dataloader.dataset.indices=N).
        indices=None,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=val_batch_size,
    num_workers=num_workers,
    persistent_workers=True,
    drop_last=False,
    # round_up=False: with several processes each image is validated exactly once (no padding
    # duplicates); the processes' shares may differ by one image.
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/val.json',
        data_prefix=dict(img='images/'),
        test_mode=True,
        pipeline=val_pipeline))
# The test split never chooses a checkpoint. evaluate.py predicts it through the predictor users
# run (cephalometric/prediction), not through this loader; the two routes agree to 0.01 px
# (tests/test_distributed.py). This entry is for MMEngine's Runner.test() and MMPose's tools.
test_dataloader = dict(
    batch_size=val_batch_size,
    num_workers=num_workers,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/test.json',
        data_prefix=dict(img='images/'),
        test_mode=True,
        pipeline=val_pipeline))

# Mean Radial Error (px of the original image, and mm where the annotations carry pixel spacing),
# SDR at the clinical radii, per-landmark MRE. SDR radii in px are used when no spacing exists.
# collect_device='gpu' is MMEngine's name for gathering the processes' results through the process
# group (all_gather_object); it works with gloo on CPUs too, and unlike 'cpu' it needs no folder
# shared by all nodes (MMEngine's 'cpu' mode writes .dist_test/ into the current directory).
val_evaluator = dict(type='MeanRadialError', sdr_radii_mm=(2.0, 2.5, 3.0, 4.0),
                     sdr_radii_px=(2.0, 4.0, 6.0, 8.0), collect_device='gpu')
test_evaluator = val_evaluator

# ----------------------------------------------------------------------------------------------
# Runtime
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Keep the last two epochs for --resume. The best model by MRE is BestCheckpointHook's job
    # (below): a fixed path, <work_dir>/best_MRE.pth, with only what inference needs.
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='PoseVisualizationHook', enable=False))
custom_hooks = [
    # Several processes: average BatchNorm statistics after each epoch, so every process validates,
    # and rank 0 saves, the same model (no effect with one process).
    dict(type='SyncBuffersHook'),
    dict(type='BestCheckpointHook', metric='MRE'),
    dict(type='TrainingCurveHook'),
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # train_cephalometric.py uses nccl on GPUs and gloo on CPUs; a backend given with
    # --cfg-options env_cfg.dist_cfg.backend=NAME wins.
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='PoseLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True, num_digits=6)
log_level = 'INFO'
# diff_rank_seed: process k of a multi-process run seeds its augmentation with seed + k (its own
# stream); the shuffling of the data is still shared, so the processes split each epoch.
randomness = dict(seed=0, diff_rank_seed=True)
